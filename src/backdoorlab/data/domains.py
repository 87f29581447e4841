"""Image datasets of the source's application domains, each read from one ``.npz`` file.

- ``orl_faces``: the ORL / AT&T face database (40 people x 10 grey 112x92 photos) from ``orl_faces.npz``;
- ``gtsrb_npz``: GTSRB at 32x32 from ``gtsrb.npz`` (all it holds);
- ``gtsrb_npz_small``: the same file cut to a size a 2-core CPU trains and evaluates in minutes.

``data_dir`` is the folder holding the file under that name, or the file itself (:func:`locate_file`).
The spoken-digit dataset ``fsdd`` is in :mod:`backdoorlab.data.audio`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .base import Dataset, Split, build_dataset, stratified_split, to_labels, to_nchw_float
from .npz_files import class_names, locate_file, read_npz_arrays
from .sources import DATASETS

ORL_LAYOUT = (
    "orl_faces.npz with x_train (320, 112, 92), y_train, x_test (80, 112, 92), y_test, uint8 grey "
    "(the ORL / AT&T faces: images 1-8 of each person train, 9-10 test)"
)
GTSRB_NPZ_LAYOUT = (
    "gtsrb.npz with x_train, y_train, x_test, y_test (NHWC uint8 RGB 32x32, 43 classes) and "
    "train_frame (frame number within its track)"
)
ORL_VAL_PER_PERSON = 1
SMALL_FRAME_STEP = 6
SMALL_TEST_FRACTION = 1 / 6
VAL_TRACK_FRACTION = 0.1  # of each class's tracks become val


@DATASETS.register("orl_faces")
def load_orl_faces(data_dir: Path | None = None) -> Dataset:
    """ORL faces, 1x112x92 grey in [0, 1], 40 classes (``s1``..``s40``).

    The file's split (images 1-8 of each person train, 9-10 test; the set has no official split) is kept, and
    one training image per person (drawn with seed 1, fixed) becomes the defenders' ``val`` split: 280 train /
    40 val / 80 test.
    """
    path = locate_file("orl_faces", data_dir, "orl_faces.npz", ORL_LAYOUT)
    arrays = read_npz_arrays(path, ("x_train", "y_train", "x_test", "y_test"), ORL_LAYOUT)
    x_tr, y_tr = to_nchw_float(arrays["x_train"], source=f"{path}:x_train"), to_labels(arrays["y_train"])
    x_te, y_te = to_nchw_float(arrays["x_test"], source=f"{path}:x_test"), to_labels(arrays["y_test"])
    people = int((np.bincount(y_tr.numpy()) > 0).sum())
    return build_dataset("orl_faces", x_tr, y_tr, x_te, y_te, class_names(arrays), val_size=ORL_VAL_PER_PERSON * people)


def gtsrb_from_npz(path: Path, *, name: str, frame_step: int = 3, test_fraction: float = 1.0) -> Dataset:
    """GTSRB from ``gtsrb.npz``: 3x32x32 RGB in [0, 1], 43 classes.

    ``frame_step``: keep the training frames whose number within their track is a multiple of it, a multiple of 3
    (the file keeps every 3rd of the 30 frames of each physical sign; 6 halves that and still covers every track).
    ``test_fraction``: a class-stratified fraction of the official test set (fixed, seed 0); 1 keeps it all.
    ``val`` is 10% of each class's tracks (:func:`track_split`), so it holds no near-copy of a training image
    (the ~30 frames of one track are the same physical sign); a file without ``train_track`` falls back to a
    stratified 10% of the images.
    """
    if frame_step < 3 or frame_step % 3:
        raise ConfigError(f"frame_step must be a multiple of 3 (the file keeps every 3rd frame), got {frame_step}")
    if not 0 < test_fraction <= 1:
        raise ConfigError(f"test_fraction must be in (0, 1], got {test_fraction}")
    arrays = read_npz_arrays(path, ("x_train", "y_train", "x_test", "y_test"), GTSRB_NPZ_LAYOUT)
    keep = np.ones(len(arrays["y_train"]), dtype=bool)
    if frame_step != 3:
        if "train_frame" not in arrays:
            raise DataError(f"{path}: lacks train_frame, needed to keep every {frame_step}th frame")
        keep = arrays["train_frame"] % frame_step == 0
    train = Split(to_nchw_float(arrays["x_train"][keep], source=f"{path}:x_train"), to_labels(arrays["y_train"][keep]))
    test = Split(to_nchw_float(arrays["x_test"], source=f"{path}:x_test"), to_labels(arrays["y_test"]))
    if test_fraction < 1:
        _, chosen = stratified_split(test.y, float(test_fraction), seed=0)
        test = test.subset(torch.as_tensor(chosen))
    if "train_track" not in arrays:
        return build_dataset(name, train.x, train.y, test.x, test.y, class_names(arrays))
    kept, val = track_split(train.y.numpy(), arrays["train_track"][keep], VAL_TRACK_FRACTION, seed=1)
    classes = class_names(arrays) or [str(i) for i in range(int(max(train.y.max(), test.y.max())) + 1)]
    return Dataset(name, train.subset(kept), train.subset(val), test, tuple(classes))


def track_split(y: np.ndarray, track: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) that split whole tracks: in each class, ``fraction`` of its tracks (rounded, at least
    one when the class has two or more) go to ``val``, drawn with ``seed``. A track is named by (class, track)."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        tracks = np.unique(track[y == label])
        if len(tracks) < 2:
            continue
        count = max(1, round(fraction * len(tracks)))
        chosen = rng.choice(tracks, size=count, replace=False)
        val |= (y == label) & np.isin(track, chosen)
    return np.flatnonzero(~val), np.flatnonzero(val)


@DATASETS.register("gtsrb_npz")
def load_gtsrb_npz(data_dir: Path | None = None) -> Dataset:
    """All of ``gtsrb.npz``: 13,070 training images (every 3rd frame of every track; 10% of each class's tracks
    become val) and the full official test set (12,630)."""
    return gtsrb_from_npz(locate_file("gtsrb_npz", data_dir, "gtsrb.npz", GTSRB_NPZ_LAYOUT), name="gtsrb_npz")


@DATASETS.register("gtsrb_npz_small")
def load_gtsrb_npz_small(data_dir: Path | None = None) -> Dataset:
    """``gtsrb.npz`` cut for a 2-core CPU: every 6th frame of every track (6,535 images; 10% of each class's
    tracks, 665 images, are val) and a
    fixed class-stratified sixth of the official test set (2,105 images). Same classes and proportions."""
    path = locate_file("gtsrb_npz_small", data_dir, "gtsrb.npz", GTSRB_NPZ_LAYOUT)
    return gtsrb_from_npz(path, name="gtsrb_npz_small", frame_step=SMALL_FRAME_STEP, test_fraction=SMALL_TEST_FRACTION)
