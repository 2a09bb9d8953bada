"""GLUE data: task specs (``tasks``), TSV readers (``glue``), tokenised features (``features``)
and batching (``loader``). Import the submodules directly: this package stays light so that
config errors are reported before torch is imported."""
