"""Hugging Face model directories as MLflow pyfunc models.

The model directory travels as an artifact (``artifacts/hf_model``) next to a tiny PythonModel,
so ``mlflow.pyfunc.load_model`` can classify text offline and LAD itself can download the
directory and load it with ``from_pretrained`` (no pickle involved on LAD's side).
"""

from __future__ import annotations

from pathlib import Path

HF_ARTIFACT_KEY = "hf_model"

try:  # mlflow (and pandas, which it requires) are installed with lad; keep tooling import-safe
    import pandas as pd
    from mlflow.pyfunc import PythonModel as _Base
except ImportError:  # pragma: no cover
    _Base = object


class HFSequenceClassifier(_Base):
    """pyfunc wrapper: a DataFrame with ``text_a`` (and optional ``text_b``) -> predicted labels."""

    def load_context(self, context):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = context.artifacts[HF_ARTIFACT_KEY]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()

    # the DataFrame type hint tells MLflow the input type (no schema is inferred from it: the logged
    # signature and input example say which columns); without a hint MLflow warns at import
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list:
        import torch

        from lad.models.arch import forward_inputs

        text_a = list(model_input["text_a"])
        text_b = list(model_input["text_b"]) if "text_b" in model_input else None
        enc = self.tokenizer(text_a, text_b, truncation=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = self.model(**forward_inputs(self.model, enc)).logits
        if logits.shape[-1] == 1:
            return logits[:, 0].tolist()
        id2label = self.model.config.id2label
        return [id2label[int(i)] for i in logits.argmax(-1)]


def input_example(task, examples) -> "pandas.DataFrame":  # noqa: F821 - pandas comes with mlflow
    """A few rows of what ``HFSequenceClassifier.predict`` takes: ``text_a`` (+ ``text_b`` for pair tasks)."""
    import pandas as pd

    rows = list(examples)[:2] or [None]
    data = {"text_a": [e.text_a if e else "an example sentence" for e in rows]}
    if task.is_pair:
        data["text_b"] = [(e.text_b or "") if e else "another sentence" for e in rows]
    return pd.DataFrame(data)


def task_input_example(cfg, task):
    """``input_example`` of the run's task from the first dev rows (a made-up row if unreadable).

    Rows are read through the task's layout (GLUE folder, own files, Hub dataset), like training."""
    from lad.core.errors import LADError
    from lad.data.sources import read_split
    from lad.data.tasks import eval_splits

    splits = eval_splits(task)
    try:
        examples = read_split(task, cfg.data.data_dir, splits[0], 2) if splits else []
    except (LADError, OSError):
        examples = []
    return input_example(task, examples)


def signature_for(example, labels: dict | None):
    """Input columns of ``example`` (strings; ``text_b`` only for pair tasks); output: the label
    name per row, or the score (regression, ``labels`` None)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema([ColSpec("string", name) for name in example.columns])
    outputs = Schema([ColSpec("string" if labels else "double")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_hf_model(mlflow, run_id: str, model_dir: Path, registered_name: str | None,
                 example=None) -> None:
    """Log ``model_dir`` as a pyfunc model with a signature and (when given) an input example."""
    import json
    import logging

    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    if example is None:
        example = input_example(_NoTask(), [])
    config = json.loads((Path(model_dir) / "config.json").read_text())
    regression = config.get("problem_type") == "regression" or config.get("num_labels") == 1
    with mlflow.start_run(run_id=run_id, nested=True):
        mlflow.pyfunc.log_model(
            name="model",
            python_model=HFSequenceClassifier(),
            artifacts={HF_ARTIFACT_KEY: str(model_dir)},
            registered_model_name=registered_name,
            pip_requirements=["torch", "transformers"],
            signature=signature_for(example, None if regression else config.get("id2label", {0: "0"})),
            input_example=example,
        )


class _NoTask:
    is_pair = False
