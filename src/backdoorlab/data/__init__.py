"""Datasets: images float32 NCHW in [0, 1], int64 labels, train / val / test splits.

>>> from backdoorlab.data import load_dataset
>>> ds = load_dataset("mnist5k")   # doctest: +SKIP
"""

from .adapters import from_torch_dataset
from .base import Dataset, Split, build_dataset
from .sources import DATASETS, dataset_names, load_dataset, load_npz

__all__ = [
    "DATASETS",
    "Dataset",
    "Split",
    "build_dataset",
    "dataset_names",
    "from_torch_dataset",
    "load_dataset",
    "load_npz",
]

# Datasets of the application domains (issue 10): fsdd, orl_faces, gtsrb_npz(_small); importing registers them.
from . import audio, domains  # noqa: E402,F401
