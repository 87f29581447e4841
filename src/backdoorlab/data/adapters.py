"""Adapter for any ``torch.utils.data.Dataset`` of (image, label) pairs, for library users."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DataError
from .base import Dataset, build_dataset


def _image_to_chw(image: object) -> torch.Tensor:
    """A tensor CHW float in [0, 1], a PIL image, or an HW/HWC uint8 array -> float32 CHW in [0, 1]."""
    if isinstance(image, torch.Tensor):
        t = image.detach().to(torch.float32)
        if t.ndim == 2:
            t = t.unsqueeze(0)
        if image.dtype == torch.uint8:
            t = t / 255.0
        return t
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise DataError(f"cannot read an image of shape {arr.shape}; expected CHW tensor, HWC array or PIL image")
    scale = 255.0 if np.issubdtype(arr.dtype, np.integer) else 1.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)) / scale


def _stack(ds: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for i in range(len(ds)):  # type: ignore[arg-type]
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"item {i} of the torch dataset is not an (image, label) pair")
        images.append(_image_to_chw(item[0]))
        labels.append(int(item[1]))
    if not images:
        raise DataError("the torch dataset is empty")
    x = torch.stack(images)
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise DataError("images must be in [0, 1] (leave normalization to the model's first layer)")
    return x, torch.tensor(labels, dtype=torch.int64)


def from_torch_dataset(
    train: torch.utils.data.Dataset,
    test: torch.utils.data.Dataset | None = None,
    *,
    name: str = "torch",
    classes: Sequence[str] | None = None,
    val_size: int | float = 0.1,
) -> Dataset:
    """Wrap torch datasets of (image, label) into a :class:`Dataset` held in memory.

    Images may be CHW float tensors in [0, 1], uint8 tensors/arrays, or PIL images; do not normalize them.
    Without ``test``, 20% of ``train`` is split off as the test split.
    """
    x_tr, y_tr = _stack(train)
    x_te, y_te = _stack(test) if test is not None else (None, None)
    return build_dataset(name, x_tr, y_tr, x_te, y_te, classes, val_size=val_size)
