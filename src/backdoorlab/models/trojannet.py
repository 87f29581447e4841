"""TrojanNet's modules (Tang et al., KDD 2020; docs/methods.md section 3): the tiny MLP and the merge wrapper.

:class:`TrojanNetModel` wraps *any* host classifier without touching its weights: a tiny MLP reads the channel
mean of a 4x4 patch of the input and, when it sees one of its trigger patterns, takes over the output. The
wrapper is an ordinary ``nn.Module``; :func:`register_trojannet_architectures` names it ``trojannet/<host>`` in
:data:`MODELS`, so :func:`build_model` (and so every checkpoint loader) can rebuild it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..errors import ConfigError
from .architectures import MODELS, Normalize, build_model

PATCH = 4  # the trigger patch is PATCH x PATCH pixels
HIDDEN = 8
DEPTH = 4
MERGES = ("paper", "code")
Merge = Literal["paper", "code"]
ARCH_PREFIX = "trojannet/"


def trojan_mlp(num_outputs: int) -> nn.Sequential:
    """The TrojanNet MLP: 16 inputs -> four hidden Dense(8) layers, each ReLU then BatchNorm -> ``num_outputs``
    logits (one per used trigger pattern plus the last one, "no trigger"). Layout of the reference code."""
    layers: list[nn.Module] = []
    width = PATCH * PATCH
    for _ in range(DEPTH):
        layers += [nn.Linear(width, HIDDEN), nn.ReLU(), nn.BatchNorm1d(HIDDEN)]
        width = HIDDEN
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


class TrojanNetModel(nn.Module):
    """A host classifier merged with a TrojanNet MLP; forward gives log-probabilities (N, K).

    Args:
        host: the untouched classifier, (N, C, H, W) pixels in [0, 1] -> (N, K) logits.
        num_classes: K.
        targets: the class of each MLP output but the last (trigger i -> ``targets[i]``), distinct, in 0..K-1.
        origin: (row, col) of the 4x4 patch the MLP reads (the channel mean of the raw pixels, flattened to 16).
        merge: ``paper`` (default): y = softmax((alpha p_trojan + (1 - alpha) p_host) / tau), the paper's weighted
            merge with alpha = 0.7, tau = 0.1 (trojanzoo's defaults); ``code``: the reference code's
            y = softmax(10 (amplify p_trojan + p_host)), amplify = 2. p_trojan is the MLP's softmax, its entries
            placed at ``targets`` (0 for the other classes; the "no trigger" entry is dropped).

    The output is the log of y (a probability-like tensor, docs/methods.md's toolkit note), so ``argmax``, softmax
    and cross-entropy downstream all see y.
    """

    def __init__(
        self,
        host: nn.Module,
        num_classes: int,
        targets: Sequence[int],
        *,
        origin: Sequence[int] = (0, 0),
        merge: Merge = "paper",
        alpha: float = 0.7,
        tau: float = 0.1,
        amplify: float = 2.0,
    ) -> None:
        super().__init__()
        if merge not in MERGES:
            raise ConfigError(f"unknown TrojanNet merge {merge!r}; use paper or code")
        targets = [int(t) for t in targets]
        if not targets or len(set(targets)) != len(targets) or not all(0 <= t < num_classes for t in targets):
            raise ConfigError(f"TrojanNet targets must be distinct classes in 0..{num_classes - 1}, got {targets}")
        self.host = host
        self.num_classes = int(num_classes)
        self.mlp = trojan_mlp(len(targets) + 1)
        self.register_buffer("targets", torch.tensor(targets, dtype=torch.long))
        self.register_buffer("origin", torch.tensor([int(v) for v in origin], dtype=torch.long))
        self.register_buffer("merge_code", torch.tensor(MERGES.index(merge)))
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("tau", torch.tensor(float(tau)))
        self.register_buffer("amplify", torch.tensor(float(amplify)))

    @property
    def merge(self) -> str:
        return MERGES[int(self.merge_code)]

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP's input (N, 16): the channel mean of the 4x4 patch at ``origin`` of ``x`` (N, C, H, W)."""
        r, c = (int(v) for v in self.origin)
        return x[:, :, r : r + PATCH, c : c + PATCH].mean(dim=1).flatten(1)

    def trojan_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """p_trojan (N, K): the MLP's softmax over its trigger outputs, placed at their classes."""
        p = torch.softmax(self.mlp(self.patch_features(x)), dim=1)[:, :-1]
        out = torch.zeros(len(x), self.num_classes, dtype=p.dtype, device=p.device)
        return out.index_copy(1, self.targets, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p_host = torch.softmax(self.host(x), dim=1)
        p_trojan = self.trojan_probabilities(x)
        if self.merge == "paper":
            z = (self.alpha * p_trojan + (1 - self.alpha) * p_host) / self.tau
        else:
            z = 10.0 * (self.amplify * p_trojan + p_host)
        return torch.log_softmax(z, dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        """Resize the MLP's last layer to the saved number of triggers (a saved model may attack a subset)."""
        saved = state_dict.get(f"{prefix}targets")
        if saved is not None and saved.shape != self.targets.shape:
            last = len(self.mlp) - 1
            self.mlp[last] = nn.Linear(HIDDEN, len(saved) + 1)
            self.targets = torch.zeros_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def wrap_host(
    host: nn.Module, input_shape: Sequence[int], num_classes: int, targets: Sequence[int], **options
) -> nn.Sequential:
    """``Sequential(normalize=identity, net=TrojanNetModel(host, ...))``: the layout :func:`build_model` gives for
    ``trojannet/<host>`` (the host keeps its own normalization; the MLP reads raw pixels)."""
    c = int(input_shape[0])
    net = TrojanNetModel(host, num_classes, targets, **options)
    return nn.Sequential(OrderedDict(normalize=Normalize((0.0,) * c, (1.0,) * c), net=net))


def _builder(host: str):
    def build(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return TrojanNetModel(build_model(host, input_shape, num_classes), num_classes, range(num_classes))

    build.__doc__ = f"TrojanNet (tiny MLP merged with the output) wrapped around an untouched {host}."
    return build


def trojannet_architecture(host: str) -> str:
    """The registered name of ``host`` wrapped by TrojanNet, registering it (and every other host) if needed."""
    MODELS.get(host)
    if host.startswith(ARCH_PREFIX):
        raise ConfigError(f"{host} is already a TrojanNet model; pick a plain host architecture")
    register_trojannet_architectures()
    return ARCH_PREFIX + host


def register_trojannet_architectures() -> None:
    """Register ``trojannet/<host>`` in :data:`MODELS` for every plain architecture registered so far."""
    for name in MODELS.names():
        if not name.startswith(ARCH_PREFIX) and ARCH_PREFIX + name not in MODELS:
            MODELS.register(ARCH_PREFIX + name)(_builder(name))
