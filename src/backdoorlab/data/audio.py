"""Audio as a first-class input: fixed-length waveforms in the toolkit's image layout, and the ``fsdd`` dataset.

A batch of waveforms of ``L`` samples is an image-shaped float32 tensor (N, 1, 1, L) with values in [0, 1]:

    v = (s + 32768) / 65535        for 16-bit PCM samples s in -32768..32767,

so full scale maps to 0..1 and **silence is 0.5** (exactly 32768 / 65535 = 0.5000076). Keeping the image
contract means ``Split``/``Dataset``, triggers (a :class:`~backdoorlab.triggers.MaskedTrigger` over a (1, 1, L)
mask), STRIP's superimposition, pruning and the training loop work on audio unchanged. The feature front end
(log-mel spectrogram) lives inside the model (:mod:`backdoorlab.models.speech`), like image normalization, so
triggers live in the waveform domain.

Clips of other lengths are made ``L`` long by :func:`fix_length`: shorter clips are padded with silence at the
end (left-aligned, the usual choice for keyword spotting), longer ones keep their first ``L`` samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .base import Dataset, build_dataset, to_labels
from .npz_files import class_names, locate_file, read_npz_arrays
from .sources import DATASETS

FULL_SCALE = 32768.0
SILENCE = FULL_SCALE / 65535.0  # the value of a 0 sample: 0.5000076
FSDD_LENGTH = 8000  # 1 s at 8 kHz (the FSDD README's suggestion for fixed-length input)
FSDD_LAYOUT = (
    "fsdd.npz with audio (int16, clips concatenated), offsets, lengths, labels, is_test "
    "(the Free Spoken Digit Dataset, github.com/Jakobovski/free-spoken-digit-dataset, 8 kHz)"
)


def int16_to_unit(samples: np.ndarray | torch.Tensor) -> torch.Tensor:
    """16-bit PCM samples (any shape, integer or float values in -32768..32767) -> float32 in [0, 1]."""
    x = torch.as_tensor(np.asarray(samples), dtype=torch.float32)
    return ((x + FULL_SCALE) / 65535.0).clamp_(0, 1)


def unit_to_amplitude(x: torch.Tensor) -> torch.Tensor:
    """Inverse scale: [0, 1] -> amplitude relative to full scale, in [-1, 1) (silence 0)."""
    return (x * 65535.0 - FULL_SCALE) / FULL_SCALE


def fix_length(clips: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Clips (1-D int16 arrays of any length) -> (N, length) int16: zero-padded at the end or cut after ``length``."""
    if length < 1:
        raise DataError(f"waveform length must be >= 1 sample, got {length}")
    out = np.zeros((len(clips), length), dtype=np.int16)
    for i, clip in enumerate(clips):
        clip = np.asarray(clip).reshape(-1)[:length]
        out[i, : len(clip)] = clip
    return out


def waveforms(samples: np.ndarray) -> torch.Tensor:
    """(N, L) int16 samples -> (N, 1, 1, L) float32 in [0, 1] (silence 0.5)."""
    arr = np.asarray(samples)
    if arr.ndim != 2:
        raise DataError(f"expected (N, L) waveforms, got shape {arr.shape}")
    return int16_to_unit(arr)[:, None, None, :].contiguous()


def waveform_dataset(
    name: str,
    clips: Sequence[np.ndarray],
    labels: np.ndarray,
    is_test: np.ndarray,
    classes: Sequence[str] | None = None,
    *,
    length: int = FSDD_LENGTH,
    val_size: int | float = 0.1,
    seed: int = 0,
) -> Dataset:
    """A :class:`Dataset` of fixed-length waveforms (N, 1, 1, ``length``) from raw int16 ``clips``.

    ``is_test`` (N,) bool selects the test clips; a stratified ``val_size`` of the others (default 10%, fixed
    by ``seed``) becomes the defenders' ``val`` split.
    """
    y = to_labels(np.asarray(labels), f"{name} labels")
    test = np.asarray(is_test, dtype=bool)
    if len(clips) != len(y) or len(test) != len(y):
        raise DataError(f"{name}: {len(clips)} clips, {len(y)} labels and {len(test)} split flags differ in number")
    x = waveforms(fix_length(clips, length))
    return build_dataset(name, x[~test], y[~test], x[test], y[test], classes, val_size=val_size, seed=seed)


def fsdd_clips(arrays: dict[str, np.ndarray], source: str) -> list[np.ndarray]:
    """The ragged clips of an FSDD file: ``audio[offsets[i] : offsets[i] + lengths[i]]``."""
    audio, offsets, lengths = arrays["audio"], arrays["offsets"], arrays["lengths"]
    if len(offsets) != len(lengths) or (len(offsets) and int((offsets + lengths).max()) > len(audio)):
        raise DataError(f"{source}: offsets/lengths do not fit the audio array; expected {FSDD_LAYOUT}")
    return [audio[o : o + n] for o, n in zip(offsets.tolist(), lengths.tolist(), strict=True)]


@DATASETS.register("fsdd")
def load_fsdd(data_dir: Path | None = None) -> Dataset:
    """The Free Spoken Digit Dataset (3,000 clips, 6 speakers x 10 digits x 50 takes, 8 kHz) from ``fsdd.npz``.

    ``data_dir`` is the folder holding ``fsdd.npz`` or the file itself. Official split: takes 0-4 are test
    (300 clips), takes 5-49 train (2,700), of which a stratified 10% (270) becomes ``val``. Clips are padded
    with silence / cropped to 8,000 samples (1 s) and scaled to [0, 1] with silence at 0.5 (module docstring).
    """
    path = locate_file("fsdd", data_dir, "fsdd.npz", FSDD_LAYOUT)
    arrays = read_npz_arrays(path, ("audio", "offsets", "lengths", "labels", "is_test"), FSDD_LAYOUT)
    clips = fsdd_clips(arrays, str(path))
    return waveform_dataset("fsdd", clips, arrays["labels"], arrays["is_test"], class_names(arrays))
