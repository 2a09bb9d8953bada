"""Hyper-parameter search over runs: the sweeper grammar as Optuna distributions (``space``), the
Optuna studies shared by the Hydra sweeper and the in-process search (``studies``), the in-process
search with pruning (``inprocess``, ``pruning``, ``trials``, ``results``), the override list that
re-runs one trial (``rerun``) and the accuracy-speed front of a multi-objective study (``pareto``).
It calls ``lad.run`` and never reaches inside a run."""
