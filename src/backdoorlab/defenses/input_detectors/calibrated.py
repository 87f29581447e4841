"""What STRIP and Feature Squeezing share: checked inputs, a model bound at ``fit``, a threshold from clean data."""

from __future__ import annotations

import torch
from pydantic import Field, PrivateAttr
from torch import nn

from ...data import Split
from ...errors import ConfigError
from ...metrics import ThresholdRule, threshold_for_rate
from ...models import predict_logits
from ...utils.device import resolve_device
from ..base import InputDetector
from .outputs import OutputKind


def check_images(x: torch.Tensor, what: str = "images") -> None:
    """Raise :class:`ConfigError` unless ``x`` is a float (N, C, H, W) tensor with every value in [0, 1]."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{what} must be a float tensor of shape (N, C, H, W), got {shape}")
    if x.numel() == 0:
        return
    low, high = float(x.min()), float(x.max())
    if not (low >= 0.0 and high <= 1.0):  # also catches NaN
        raise ConfigError(
            f"{what} must have pixel values in [0, 1], got values in [{low:.4g}, {high:.4g}]; "
            "scale them to [0, 1] first"
        )


def check_num_outputs(model: nn.Module, clean: Split, num_classes: int | None, device: torch.device) -> int:
    """The model's number of outputs K, checked against ``num_classes`` (or, when None, the clean labels)."""
    try:
        outputs = predict_logits(model, clean.x[:2], device=device)
    except RuntimeError as err:
        raise ConfigError(
            f"the model does not accept images of shape {tuple(clean.x.shape[1:])} ({str(err).strip().splitlines()[0]})"
        ) from None
    if outputs.ndim != 2:
        raise ConfigError(f"the model must output (N, K) class scores, got shape {tuple(outputs.shape)}")
    k = outputs.shape[1]
    if num_classes is not None and k != num_classes:
        raise ConfigError(
            f"the model outputs {k} scores per input but the data has {num_classes} classes; "
            "use a model trained on this dataset"
        )
    if num_classes is None and len(clean) and int(clean.y.max()) >= k:
        raise ConfigError(
            f"the model outputs {k} scores per input but the clean labels go up to "
            f"{int(clean.y.max())}; use a model trained on this dataset"
        )
    return k


class CalibratedDetector(InputDetector):
    """An :class:`InputDetector` bound to a model by ``fit`` and thresholded on clean scores.

    Subclasses implement ``fit`` (calling :meth:`_bind`, then :meth:`_calibrate` with the clean scores) and
    ``_score``. ``score`` checks its input and requires a fitted detector.
    """

    output: OutputKind = Field(
        "logits",
        description="what the model outputs: logits (or log-probabilities), "
        "or probabilities (a model ending in Softmax)",
    )

    _model: nn.Module | None = PrivateAttr(None)
    _device: torch.device = PrivateAttr(default_factory=lambda: torch.device("cpu"))
    _seed: int = PrivateAttr(0)
    _num_outputs: int = PrivateAttr(0)
    _threshold: float | None = PrivateAttr(None)
    _clean_scores: torch.Tensor | None = PrivateAttr(None)

    def _bind(
        self, model: nn.Module, clean: Split, *, seed: int, device: str | torch.device, num_classes: int | None
    ) -> None:
        """Check ``clean`` and the model's output size, then keep model, device and seed; forget any threshold."""
        check_images(clean.x, "clean images")
        if len(clean) == 0:
            raise ConfigError(f"{self.name} needs clean images to calibrate on, got none")
        dev = resolve_device(device)
        self._num_outputs = check_num_outputs(model, clean, num_classes, dev)
        self._model, self._device, self._seed = model, dev, int(seed)
        self._threshold = self._clean_scores = None

    def _calibrate(self, clean_scores: torch.Tensor, rate: float, rule: ThresholdRule) -> None:
        """Keep the clean scores (N,) and set the threshold that flags ``rate`` of them under ``rule``."""
        self._clean_scores = clean_scores
        self._threshold = threshold_for_rate(clean_scores, rate, rule)

    def _require_fit(self, *, calibrated: bool = True) -> nn.Module:
        """The bound model; raises unless ``fit`` bound one (and, with ``calibrated``, also set the threshold)."""
        if self._model is None or (calibrated and self._threshold is None):
            raise ConfigError(f"{self.name} is not fitted: call fit(model, clean) before score or predict")
        return self._model

    @property
    def threshold_(self) -> float:
        """Inputs scoring above this are flagged; chosen in ``fit`` on clean data only."""
        self._require_fit()
        return float(self._threshold)  # type: ignore[arg-type]

    @property
    def clean_scores_(self) -> torch.Tensor:
        """The scores (N,) of the clean inputs ``fit`` calibrated on."""
        self._require_fit()
        return self._clean_scores  # type: ignore[return-value]

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Suspicion scores (N,) of images ``x`` (N, C, H, W) in [0, 1]; higher is more suspicious."""
        self._require_fit()
        check_images(x, "images to score")
        return self._score(x)

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
