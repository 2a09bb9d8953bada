"""Shared fixtures: tiny random BERT teachers (real MiniLM tokenizer) and tiny GLUE-format data.

The helpers themselves live in :mod:`lad.testing` (importable by the scripts too); they are
re-exported here so that tests keep writing ``from conftest import compose, save_tiny_model``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lad.testing import (FILL, NEG, POS, REPO, SHARED_GLUE, compose, minilm_dir,  # noqa: F401 (re-exported)
                         offline_environment, save_tiny_model, tiny_bert_config, write_sst2_like)

offline_environment()


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory) -> Path:
    return write_sst2_like(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A 4-layer x 32 random 'fine-tuned' SST-2 teacher."""
    return save_tiny_model(tmp_path_factory.mktemp("teacher") / "sst2", num_layers=4)
