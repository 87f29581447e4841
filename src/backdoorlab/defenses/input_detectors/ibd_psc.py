"""IBD-PSC (Hou, Yang, Li, Wang, Xu, ICML 2024, arXiv 2405.09786): parameter-oriented scaling consistency.

Amplifying the affine parameters of a model's last batch-normalisation layers wrecks its predictions on clean
inputs, but a triggered input keeps its target label with high confidence: the backdoor survives parameter
amplification. White-box: the detector edits copies of the model's parameters.
"""

from __future__ import annotations

import copy
import warnings
from typing import ClassVar

import torch
from pydantic import Field, PrivateAttr
from torch import nn

from ...data import Split
from ...errors import ConfigError
from ...models import predict_logits
from ..base import DEFENSES
from .calibrated import CalibratedDetector
from .outputs import model_log_probabilities


def scalable_layers(model: nn.Module) -> tuple[list[str], bool]:
    """Names of the layers IBD-PSC amplifies, in forward (registration) order, and whether they are BN layers.

    The affine batch-norm layers when the model has any; else its convolution and linear layers."""
    bn = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    if bn:
        return bn, True
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)], False


def amplified(model: nn.Module, names: list[str], scale: float) -> nn.Module:
    """A copy of ``model`` whose layers ``names`` have weight and bias multiplied by ``scale``."""
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    with torch.no_grad():
        for name in names:
            for p in (modules[name].weight, getattr(modules[name], "bias", None)):
                if p is not None:
                    p.mul_(scale)
    return out.eval()


@DEFENSES.register("ibd_psc")
class IBDPSC(CalibratedDetector):
    """IBD-PSC input detector. ``score(x)`` is PSC(x) in [0, 1]: higher is more suspicious.

    With L amplifiable layers in forward order, model_j multiplies the weight and bias of the last j of them by
    ``scale``. ``fit`` finds the start k: the smallest j at which model_j's error on the clean fit images (their
    labels) exceeds ``xi`` (L when none does; the paper's adaptive layer selection). The detector keeps the
    ``n`` models model_k, ..., model_{k+n-1} (j capped at L, so a model with few layers repeats the last one).
    PSC(x) = (1/n) sum_j softmax(model_j(x))[y], y the original model's label of x (paper, eq. 3-4); an input is
    flagged when PSC > ``threshold`` (T), or, when ``fpr`` is set, above the clean score exceeded by that
    fraction of the clean fit images.

    Defaults are the paper's: n = 5, xi = 0.6, T = 0.9, scale 1.5.

    A network without batch normalisation (``badnet_cnn``): the paper needs BN layers; we amplify the weights
    and biases of the convolution and linear layers instead, and ``fit`` warns. On a ReLU network that is
    positively homogeneous, so model_j's logits are the original ones times 1.5^j: labels never change (the
    layer search ends at k = L) and PSC becomes the mean confidence of temperature-sharpened softmaxes, a
    confidence score rather than the paper's test. Deterministic: ``seed`` is unused.
    """

    name: ClassVar[str] = "ibd_psc"

    n: int = Field(5, ge=1, le=100, description="number of amplified models whose confidences are averaged")
    xi: float = Field(0.6, gt=0, lt=1, description="clean error rate that selects the first amplified layer")
    threshold: float = Field(0.9, ge=0, le=1, description="T: inputs with PSC above it are flagged (when fpr is None)")
    fpr: float | None = Field(
        None, ge=0, lt=1, description="when set, the threshold flags this fraction of the clean fit images instead of T"
    )
    scale: float = Field(1.5, gt=1, description="factor applied to the amplified layers' weight and bias")
    batch_size: int = Field(512, ge=1, description="images per forward pass")

    _models: list[nn.Module] = PrivateAttr(default_factory=list)
    _start: int = PrivateAttr(0)
    _has_bn: bool = PrivateAttr(True)

    def fit(self, model, clean: Split, *, seed: int = 0, device="auto", num_classes: int | None = None) -> IBDPSC:
        """Select the amplified layers on ``clean`` (N, C, H, W in [0, 1], with labels) and set the threshold."""
        self._bind(model, clean, seed=seed, device=device, num_classes=num_classes)
        names, self._has_bn = scalable_layers(model)
        if not names:
            raise ConfigError("ibd_psc: the model has no batch-norm, convolution or linear layer to amplify")
        if not self._has_bn:
            warnings.warn(
                "ibd_psc: the model has no batch-norm layer; amplifying its convolution and linear layers instead "
                "(on a ReLU network this only sharpens the softmax: see the docstring)",
                stacklevel=2,
            )
        total, start = len(names), len(names)
        for j in range(1, total + 1):
            pred = predict_logits(amplified(model, names[-j:], self.scale), clean.x, device=self._device).argmax(1)
            if float((pred != clean.y).float().mean()) > self.xi:
                start = j
                break
        self._start = start
        counts = [min(j, total) for j in range(start, start + self.n)]
        self._models = [amplified(model, names[-j:], self.scale) for j in counts]
        scores = self._score(clean.x)
        if self.fpr is None:
            self._clean_scores, self._threshold = scores, float(self.threshold)
        else:
            self._calibrate(scores, self.fpr, "empirical")
        return self

    def _score(self, x: torch.Tensor) -> torch.Tensor:
        kw = {"batch_size": self.batch_size, "device": self._device}
        label = predict_logits(self._model, x, **kw).argmax(dim=1)
        psc = torch.zeros(len(x))
        for m in self._models:
            psc += model_log_probabilities(m, x, self.output, **kw).gather(1, label[:, None]).squeeze(1).exp()
        return psc / len(self._models)

    def calibration_metrics(self) -> dict[str, float]:
        """The number of amplified layers of the first model (k) and whether they are BN layers."""
        return {"start_layers": float(self._start), "uses_bn": float(self._has_bn)}
