"""Audio triggers: a short tone or noise burst stamped on a waveform at a fixed position (BadNets for audio).

Waveforms are image-shaped, (N, 1, 1, L) float32 in [0, 1] with silence at 0.5 (:mod:`backdoorlab.data.audio`),
so a burst is a :class:`MaskedTrigger` over a (1, 1, L) mask: ``x' = (1 - m) * x + m * p``. Inside the burst the
mask is 1 and the pattern ``p`` is the burst, so the burst *replaces* the samples there, as a BadNets patch
replaces pixels; the mask rises and falls with short raised-cosine ramps (``ramp`` seconds) so the cut into
the recording makes no click. Outside the burst the mask is 0.

Amplitudes are fractions of full scale: a tone of ``amplitude`` 0.1 swings between -0.1 and +0.1 of full scale
(0.45 .. 0.55 in [0, 1] units). FSDD's speech has a mean absolute level of about 0.03 of full scale.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ..data.audio import SILENCE
from ..errors import ConfigError, check_range
from ..utils.seeding import make_generator
from .base import MaskedTrigger

BurstKind = Literal["tone", "noise"]
BURST_KINDS = ("tone", "noise")


def burst_window(length: int, first: int, count: int, ramp: int) -> torch.Tensor:
    """(length,) mask: 1 on samples ``first .. first + count - 1``, raised-cosine ramps of ``ramp`` samples at
    both ends inside that span, 0 elsewhere."""
    mask = torch.zeros(length)
    mask[first : first + count] = 1.0
    ramp = min(ramp, count // 2)
    if ramp > 0:
        rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(ramp) + 0.5) / ramp)
        mask[first : first + ramp] = rise
        mask[first + count - ramp : first + count] = rise.flip(0)
    return mask


def burst_signal(kind: BurstKind, count: int, *, sample_rate: int, frequency: float, seed: int) -> torch.Tensor:
    """(count,) burst in [-1, 1]: a sine of ``frequency`` Hz starting at phase 0, or uniform white noise drawn
    from ``seed`` (the same noise every time, so the trigger is deterministic)."""
    if kind == "tone":
        return torch.sin(2 * math.pi * frequency * torch.arange(count, dtype=torch.float64) / sample_rate).float()
    if kind == "noise":
        return torch.rand(count, generator=make_generator(seed)) * 2 - 1
    raise ConfigError(f"unknown audio burst {kind!r}; valid: {', '.join(BURST_KINDS)}")


def burst_trigger(
    length: int,
    kind: BurstKind = "tone",
    *,
    sample_rate: int = 8000,
    start: float = 0.9,
    duration: float = 0.1,
    amplitude: float = 0.1,
    frequency: float = 1000.0,
    ramp: float = 0.005,
    seed: int = 0,
) -> MaskedTrigger:
    """A tone or noise burst on waveforms of ``length`` samples at ``sample_rate`` Hz.

    Args:
        kind: ``tone`` (a sine of ``frequency`` Hz, default 1 kHz) or ``noise`` (uniform white noise, from ``seed``).
        start, duration: where the burst sits, in seconds (default 0.9 s and 0.1 s: the last 100 ms of a 1-s
            clip, where most FSDD digits have ended and the burst replaces silence).
        amplitude: peak level as a fraction of full scale, in (0, 1] (default 0.1).
        ramp: fade-in/out of the mask in seconds (default 5 ms), at most half the burst.

    Our choices: the Fine-Pruning paper's speech trigger is not described in the notes we have (docs/methods.md §7),
    so the defaults are a plain audible burst that a BadNets-style attacker would pick.
    """
    if length < 1 or sample_rate < 1:
        raise ConfigError(f"audio trigger needs length >= 1 and sample_rate >= 1, got {length} and {sample_rate}")
    check_range("burst amplitude", amplitude, 0.0, 1.0, low_open=True)
    check_range("burst ramp", ramp, 0.0, math.inf)
    if kind == "tone":
        check_range("tone frequency", frequency, 0.0, sample_rate / 2, low_open=True)
    first, count = round(start * sample_rate), round(duration * sample_rate)
    if start < 0 or count < 1 or first + count > length:
        raise ConfigError(
            f"a {duration:g} s burst at {start:g} s does not fit in {length} samples "
            f"({length / sample_rate:g} s at {sample_rate} Hz)"
        )
    mask = burst_window(length, first, count, round(ramp * sample_rate))
    pattern = torch.full((length,), SILENCE)
    signal = burst_signal(kind, count, sample_rate=sample_rate, frequency=frequency, seed=seed)
    pattern[first : first + count] = (SILENCE + 0.5 * amplitude * signal).clamp(0, 1)
    params = {
        "burst": kind,
        "sample_rate": sample_rate,
        "start": start,
        "duration": duration,
        "amplitude": amplitude,
        "ramp": ramp,
    }
    params |= {"frequency": frequency} if kind == "tone" else {"seed": seed}
    return MaskedTrigger(mask.view(1, 1, length), pattern.view(1, 1, length), kind=f"{kind}_burst", params=params)
