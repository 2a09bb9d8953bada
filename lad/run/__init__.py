"""One training run from a composed config to a trained model and its records: the Hydra entry glue
(``cli``, ``hydra_callback``), the stages of ``pipeline.run`` (``checks`` before any work,
``builders`` that assemble the trainable unit, ``fit`` that trains and saves, ``evaluation``,
``gate_report``), the one training loop (``train``) with its schedules and checkpoints, the run
directory a run claims (``rundir``), data parallelism (``distributed``) and the value a job returns
to a sweeper (``objectives``)."""
