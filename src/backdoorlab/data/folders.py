"""Clean samples for auditing a model: a folder of images, an ``.npz``, or a dataset name.

A folder either holds one subfolder per class (labels from the sorted subfolder names) or images directly:
labeled by their names when every name starts ``class_<K>`` (TrojAI's clean example images, ``class_3_example_0.png``),
else unlabeled (labels are -1). Images are resized to the model's input size and converted to its channel count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .base import Split, to_labels, to_nchw_float

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp"}
UNLABELED = -1
_CLASS_IN_NAME = re.compile(r"class_(\d+)(?:_|$)")


@dataclass(frozen=True)
class CleanData:
    """Clean samples: ``split`` (labels -1 when unlabeled), class names when known, where they came from."""

    split: Split
    classes: tuple[str, ...] | None
    source: str

    @property
    def labeled(self) -> bool:
        return bool(len(self.split)) and bool((self.split.y >= 0).all())


def _image(path: Path, shape: tuple[int, int, int]) -> torch.Tensor:
    c, h, w = shape
    try:
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from None
    return torch.from_numpy(arr[None] if c == 1 else arr.transpose(2, 0, 1).copy())


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _named_label(path: Path) -> int:
    """The class in a file name TrojAI's way (``class_3_example_0.png`` -> 3), else ``UNLABELED``."""
    found = _CLASS_IN_NAME.match(path.stem)
    return int(found.group(1)) if found else UNLABELED


def load_image_folder(folder: str | Path, shape: tuple[int, int, int]) -> CleanData:
    """Images of ``folder`` resized to ``shape`` (C, H, W): labeled by subfolder or by ``class_<K>`` names, else
    unlabeled."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and _files(d))
    if subdirs:
        images, labels = [], []
        for label, d in enumerate(subdirs):
            for f in _files(d):
                images.append(_image(f, shape))
                labels.append(label)
        classes: tuple[str, ...] | None = tuple(d.name for d in subdirs)
    else:
        files = _files(root)
        images, labels, classes = [_image(f, shape) for f in files], [_named_label(f) for f in files], None
        if UNLABELED in labels:  # labels from the names only when every file has one
            labels = [UNLABELED] * len(files)
    if not images:
        raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it or in its subfolders")
    return CleanData(Split(torch.stack(images), torch.tensor(labels, dtype=torch.int64)), classes, str(root))


def folder_shape(folder: str | Path) -> tuple[int, int, int]:
    """(C, H, W) of the first image of ``folder`` (or of its first class subfolder): 1 channel for grey images."""
    root = Path(folder)
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and _files(d))
    files = _files(subdirs[0]) if subdirs else _files(root)
    if not files:
        raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it or in its subfolders")
    try:
        with Image.open(files[0]) as img:
            channels = 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
            return channels, img.height, img.width
    except (OSError, ValueError) as err:
        raise DataError(f"{files[0]}: unreadable image ({err})") from None


def load_npz_samples(spec: str) -> CleanData:
    """Clean samples from an ``.npz``: all of ``x``/``y`` when the file holds only samples, else the ``val`` split
    of the dataset it holds (``x_train``/``y_train``/``x_test``/``y_test``: the defender's part of it)."""
    from . import files
    from .sources import load_npz

    path = Path(spec.removeprefix("npz:"))
    arrays = files.read_npz(path)
    if "x_train" in arrays:
        ds = load_npz(path)
        return CleanData(ds.val, ds.classes, f"{spec} (its val split: {len(ds.val)} of {len(ds.train) + len(ds.val)})")
    arr = arrays["x"]
    x = to_nchw_float(arr, 1.0 if np.issubdtype(arr.dtype, np.floating) else 255.0, f"{path}:x")
    y = to_labels(arrays["y"], f"{path}:y")
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    classes = tuple(str(c) for c in arrays["classes"]) if "classes" in arrays else None
    return CleanData(Split(x, y), classes, f"{spec} (all {len(y)} samples)")


def load_clean_data(
    spec: str, shape: tuple[int, int, int] | None = None, data_dir: str | Path | None = None
) -> CleanData:
    """Clean samples from a folder of images, an ``.npz`` (all of ``x``/``y``, or the ``val`` split of a file with
    train and test splits), or a dataset name (its clean ``val`` split, the defender's data).

    ``shape`` (C, H, W) is the model's input: folder images are resized to it, other sources must have it. None
    takes the samples' own shape (a folder's first image's).
    """
    from .sources import load_dataset

    path = Path(spec)
    if path.is_dir():
        return load_image_folder(path, shape or folder_shape(path))
    if path.suffix == ".npz" or spec.startswith("npz:"):
        clean = load_npz_samples(spec)
    else:
        ds = load_dataset(spec, data_dir)
        clean = CleanData(ds.val, ds.classes, f"{spec} (its val split)")
    if shape is not None and tuple(clean.split.x.shape[1:]) != tuple(shape):
        raise DataError(f"{spec}: images are {tuple(clean.split.x.shape[1:])} but the model takes {tuple(shape)}")
    return clean
