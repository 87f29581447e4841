"""The dataset type every layer speaks: images float32 NCHW in [0, 1], labels int64, three splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from ..errors import DataError


@dataclass(frozen=True)
class Split:
    """One split: ``x`` (N, C, H, W) float32 in [0, 1] and ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise DataError(f"images must be NCHW (4 dimensions), got shape {tuple(self.x.shape)}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise DataError(f"labels must be (N,) with N={len(self.x)}, got shape {tuple(self.y.shape)}")
        if self.x.dtype != torch.float32 or self.y.dtype != torch.int64:
            raise DataError(f"expected float32 images and int64 labels, got {self.x.dtype} and {self.y.dtype}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor | Sequence[int] | np.ndarray) -> Split:
        idx = torch.as_tensor(index, dtype=torch.long)
        return Split(self.x[idx], self.y[idx])

    def head(self, n: int) -> Split:
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Dataset:
    """A named dataset with ``train``, a clean held-out ``val`` (for defenders) and ``test`` splits.

    ``mean`` and ``std`` are per-channel statistics of ``train``; models put them in their first layer.
    """

    name: str
    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        shapes = {tuple(s.x.shape[1:]) for s in (self.train, self.val, self.test)}
        if len(shapes) != 1:
            raise DataError(f"dataset {self.name!r}: splits have different image shapes {sorted(shapes)}")
        top = max(int(s.y.max()) for s in (self.train, self.val, self.test) if len(s))
        if top >= len(self.classes):
            raise DataError(f"dataset {self.name!r}: label {top} but only {len(self.classes)} classes")
        if not self.mean:
            mean, std = channel_stats(self.train.x)
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    def summary(self) -> str:
        c, h, w = self.input_shape
        return (
            f"{self.name}: {self.num_classes} classes, {c}x{h}x{w}, "
            f"train {len(self.train)} / val {len(self.val)} / test {len(self.test)}"
        )


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``x`` (N, C, H, W); std is floored at 1e-3 so normalization never divides by 0."""
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def to_nchw_float(images: np.ndarray, max_value: float = 255.0, source: str = "images") -> torch.Tensor:
    """uint8 images NHW or NHWC (0..max_value) -> float32 NCHW tensor in [0, 1]."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[:, None, :, :]
    elif arr.ndim == 4:
        if arr.shape[-1] not in (1, 3, 4):
            raise DataError(f"{source}: expected NHW or NHWC with 1, 3 or 4 channels, got shape {arr.shape}")
        arr = arr.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{source}: expected NHW or NHWC images, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{source}: expected numeric pixel values, got dtype {arr.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)) / float(max_value)
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1.0 + 1e-6):
        raise DataError(f"{source}: pixel values must lie in 0..{max_value:g}")
    return x.clamp_(0, 1)


def to_labels(labels: np.ndarray, source: str = "labels") -> torch.Tensor:
    arr = np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{source}: expected a 1-D integer label array, got shape {arr.shape} dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise DataError(f"{source}: labels must be >= 0")
    return torch.from_numpy(arr.astype(np.int64))


def stratified_split(y: torch.Tensor, held_out: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) of a stratified split of labels ``y``; ``held_out`` is a count or a fraction.

    The held-out part gets at least one image per class when that leaves at least half of the data.
    """
    idx = np.arange(len(y))
    labels = y.numpy()
    counts = np.bincount(labels)
    n_classes = int((counts > 0).sum())
    n_out = int(round(held_out * len(y))) if isinstance(held_out, float) else int(held_out)
    if n_out < 1 or n_out >= len(y):
        raise DataError(f"cannot hold out {held_out} of {len(y)} samples")
    if n_classes * 2 <= len(y):
        n_out = max(n_out, n_classes)
    strat = labels if counts[counts > 0].min() >= 2 and n_out >= n_classes else None
    keep, out = train_test_split(idx, test_size=n_out, random_state=seed, stratify=strat)
    return np.sort(keep), np.sort(out)


def with_defender_fraction(ds: Dataset, fraction: float, seed: int = 1) -> Dataset:
    """``ds`` with its clean ``val`` split (the defender's data) redrawn as ``fraction`` of the whole training set.

    The pool is ``train`` + ``val`` (CIFAR-10: 50,000 images); ``round(fraction * pool)`` images, stratified by
    class and fixed by ``seed`` (default 1, the seed :func:`build_dataset` draws ``val`` with), become ``val``
    and the rest ``train``; ``test`` is unchanged and ``mean`` / ``std`` are recomputed on the new ``train``.
    BackdoorBench gives the defender 5% of the training set (``fraction=0.05``: 2,500 CIFAR-10 images); there
    those images are also in the attacker's training set, here ``val`` stays disjoint from ``train`` as
    everywhere in the toolkit. The split is by image: a dataset whose own ``val`` is split by track (the GTSRB
    ``.npz``) loses that separation.

    Raises:
        DataError: ``fraction`` is not strictly between 0 and 1, or leaves no image on one side.
    """
    if not 0 < fraction < 1:
        raise DataError(f"the defender's fraction must lie strictly between 0 and 1, got {fraction}")
    x, y = torch.cat([ds.train.x, ds.val.x]), torch.cat([ds.train.y, ds.val.y])
    keep, val = stratified_split(y, float(fraction), seed)
    return Dataset(ds.name, Split(x[keep], y[keep]), Split(x[val], y[val]), ds.test, ds.classes)


def build_dataset(
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor | None,
    y_test: torch.Tensor | None,
    classes: Sequence[str] | None = None,
    *,
    val_size: int | float = 0.1,
    test_size: int | float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Assemble a :class:`Dataset`: split ``test`` off when none is given, then a clean ``val`` off ``train``.

    The splits are stratified and fixed by ``seed`` (default 0), so a dataset name always means the same data.
    """
    if x_test is None or y_test is None:
        keep, out = stratified_split(y_train, test_size, seed)
        x_test, y_test = x_train[out], y_train[out]
        x_train, y_train = x_train[keep], y_train[keep]
    keep, val = stratified_split(y_train, val_size, seed + 1)
    top = int(max(y_train.max(), y_test.max())) + 1
    names = tuple(str(c) for c in classes) if classes is not None else tuple(str(i) for i in range(top))
    return Dataset(
        name=name,
        train=Split(x_train[keep], y_train[keep]),
        val=Split(x_train[val], y_train[val]),
        test=Split(x_test, y_test),
        classes=names,
    )
