"""What a task is and what its data become: task specs (``tasks``), where a split's rows come from
(``sources``) and the GLUE TSV readers (``glue``), tokenised features (``features``), batching
(``loader``) and the task's metrics (``metrics``). Import the submodules directly: this package
stays light so that config errors are reported before torch is imported."""
