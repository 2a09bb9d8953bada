"""Hugging Face model directories as MLflow pyfunc models.

The model directory travels as an artifact (``artifacts/hf_model``) next to a tiny PythonModel,
so ``mlflow.pyfunc.load_model`` can classify text offline and LAD itself can download the
directory and load it with ``from_pretrained`` (no pickle involved on LAD's side).
"""

from __future__ import annotations

from pathlib import Path

HF_ARTIFACT_KEY = "hf_model"

try:  # mlflow is installed with lad; keep the import lazy-safe for tooling
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

    def predict(self, context, model_input, params=None):  # noqa: D401 - pyfunc signature
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


def log_hf_model(mlflow, run_id: str, model_dir: Path, registered_name: str | None) -> None:
    import logging
    import warnings

    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    with warnings.catch_warnings(), mlflow.start_run(run_id=run_id, nested=True):
        warnings.simplefilter("ignore")
        mlflow.pyfunc.log_model(
            name="model",
            python_model=HFSequenceClassifier(),
            artifacts={HF_ARTIFACT_KEY: str(model_dir)},
            registered_model_name=registered_name,
            pip_requirements=["torch", "transformers"],
        )


def hf_dir_of(local: Path) -> Path:
    """The Hugging Face directory inside a downloaded pyfunc model (or ``local`` itself)."""
    if (local / "config.json").exists():
        return local
    for cand in sorted(local.rglob("config.json")):
        return cand.parent
    from lad.errors import ConfigError

    raise ConfigError(f"{local} does not contain a Hugging Face model (no config.json)")
