"""The audio feature front end: a log-mel spectrogram computed in torch, as the first layers of a speech model.

It sits inside the model right after :class:`~backdoorlab.models.Normalize`, like image normalization, so every
attack and defense works on raw waveforms (N, 1, 1, L) in [0, 1] (silence 0.5; :mod:`backdoorlab.data.audio`)
and gradients flow from the logits to the samples (Neural Cleanse, adversarial examples).

Steps, for each waveform: remove its mean (DC), short-time Fourier transform (Hann window of ``n_fft`` samples,
hop ``hop``, centred frames with reflect padding, as ``torch.stft`` does), power spectrum, a triangular mel
filterbank (HTK mel scale, ``n_mels`` bands between ``f_min`` and ``f_max``), ``log(mel + eps)``. The output
is (N, 1, n_mels, frames) with ``frames = L // hop + 1``. Nothing here is learned and nothing uses torchaudio.

Removing the DC makes superimposition mean what it should: ``x + x_t`` (STRIP's additive mode, values up to 2)
and ``a x + (1 - a) x_t`` are, after the front end, the spectrogram of the two recordings mixed; the 0.5 offset
of the [0, 1] scale never reaches the spectrum.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, peak 1, evenly spaced on the HTK mel scale.

    Filter ``m`` rises from the centre of band ``m - 1`` to its own centre and falls to the centre of band
    ``m + 1``, evaluated at the FFT bin frequencies ``k * sample_rate / n_fft``.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ConfigError(f"mel filterbank needs 0 <= f_min < f_max <= {sample_rate / 2:g} Hz, got {f_min}, {f_max}")
    if n_mels < 1 or n_fft < 2:
        raise ConfigError(f"mel filterbank needs n_mels >= 1 and n_fft >= 2, got {n_mels} and {n_fft}")
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64))
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMel(nn.Module):
    """Waveforms (N, 1, 1, L) -> log-mel spectrograms (N, 1, n_mels, L // hop + 1); see the module docstring.

    Defaults for 8 kHz speech: ``n_fft`` 256 (32 ms), ``hop`` 128 (16 ms), 40 mel bands over 0-4 kHz, ``eps``
    1e-3 (the waveform arrives in units of the training set's sample std, after :class:`Normalize`).
    """

    def __init__(
        self,
        sample_rate: int = 8000,
        n_fft: int = 256,
        hop: int = 128,
        n_mels: int = 40,
        f_min: float = 0.0,
        f_max: float | None = None,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        if hop < 1 or hop > n_fft:
            raise ConfigError(f"log-mel hop must be in 1..n_fft={n_fft}, got {hop}")
        if not eps > 0 or math.isinf(eps):
            raise ConfigError(f"log-mel eps must be a positive number, got {eps}")
        self.n_fft, self.hop, self.eps = n_fft, hop, eps
        self.register_buffer("window", torch.hann_window(n_fft))
        self.register_buffer("filterbank", mel_filterbank(n_mels, n_fft, sample_rate, f_min, f_max))

    def frames(self, length: int) -> int:
        """Number of frames for waveforms of ``length`` samples."""
        return length // self.hop + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wave = x.flatten(1)
        wave = wave - wave.mean(dim=1, keepdim=True)
        spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)  # (N, F, T); no abs(), whose gradient at 0 is NaN
        mel = torch.matmul(self.filterbank, power)  # (n_mels, F) @ (N, F, T) -> (N, n_mels, T)
        return torch.log(mel + self.eps).unsqueeze(1)
