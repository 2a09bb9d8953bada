"""GLUE data: task specs, TSV readers, tokenised features and batching."""

from lad.data.features import (
    IGNORE_INDEX, Features, encode_examples, load_features, tokenizer_fingerprint,
)
from lad.data.glue import (
    Example, read_split, resolve_data_dir, split_path, submission_path, write_submission,
)
from lad.data.loader import (
    FeaturesDataset, LengthBucketSampler, collate, make_eval_batches, make_loader,
    make_train_batches, restore_order,
)
from lad.data.tasks import METRIC_KEYS, SplitSpec, TaskSpec, eval_splits, has_split, test_splits

__all__ = [
    "IGNORE_INDEX", "METRIC_KEYS", "Example", "Features", "FeaturesDataset", "LengthBucketSampler",
    "SplitSpec", "TaskSpec", "collate", "encode_examples", "eval_splits", "has_split",
    "load_features", "make_eval_batches", "make_loader", "make_train_batches", "read_split",
    "resolve_data_dir", "restore_order", "split_path", "submission_path", "test_splits",
    "tokenizer_fingerprint", "write_submission",
]
