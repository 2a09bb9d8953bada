"""What a saved model costs and how it ships: loading it for CPU inference and timing it
(``inference``), the speed objective of multi-objective searches (``speed``), ONNX / int8 export
with a parity check (``onnx_export``) and the ``python -m lad.deploy`` command that exports a run's
model with a model card (``export``)."""
