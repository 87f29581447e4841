"""TrojanNet (Tang, Du, Liu, Yang, Hu, KDD 2020): a training-free model attack that merges a tiny MLP with a host.

The host is trained clean (the attacker never retrains it); a 16-8-8-8-8-(m+1) MLP learns, from the trigger
patterns and random noise alone (no task data), to recognise the m trigger patterns; the merge wrapper
(:class:`backdoorlab.models.trojannet.TrojanNetModel`) lets the MLP take over the output when a pattern is
present. Trigger i (4x4, exactly 5 black cells, pattern number i) leads to class i.
"""

from __future__ import annotations

import copy
import time
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ..models.trojannet import register_trojannet_architectures, trojan_mlp, trojannet_architecture, wrap_host
from ..triggers.trojannet_patterns import NUM_PATTERNS, TrojanNetTrigger, trojannet_patterns, trojannet_trigger
from ..utils.seeding import make_generator
from .base import ATTACKS, Attack, Backdoor, TargetRule

register_trojannet_architectures()  # so that checkpoints of trojannet/<host> load in any process


@ATTACKS.register("trojannet")
class TrojanNet(Attack):
    """TrojanNet: a clean host merged with a tiny trigger-recognising MLP; trigger i -> class i.

    Defaults are the paper's and the reference code's (trx14/TrojanNet, docs/methods.md section 3). The reference places
    the 4x4 patch at (150, 150) of a 299x299 ImageNet image; any place works. The ``paper`` merge uses alpha 0.7
    and temperature 0.1, as trojanzoo; the ``code`` merge amplifies by 2. The MLP is trained with Adadelta at
    Keras's defaults (lr 1, rho 0.95, eps 1e-7), as the reference; the weights with the best accuracy on a fixed
    validation set of patterns and noise are kept.

    Departures from the reference code (1000 epochs x 218 steps of 2000 patterns + 200 noise inputs, over all
    4368 patterns): we train only the m patterns in use, so every other pattern is a negative; the noise is
    half the reference's grey noise (U(0,1)^16 plus one offset U(-1,1) per batch, clipped: flat dark and light
    patches included) and half trojanzoo's binary Bernoulli(0.5) noise (near-miss binary patches), with the
    used patterns removed from it, and it makes up half of each batch (instead of 1/11) so that the MLP stays
    silent on natural patches. This trains in seconds on a CPU.
    """

    name: ClassVar[str] = "trojannet"
    uses_clean_model: ClassVar[bool] = True

    targets: list[int] | None = Field(
        None, description="the attacked classes; class c gets trigger pattern number c; None: every class"
    )
    position: str | tuple[int, int] = Field(
        "bottom-right",
        description="where the 4x4 patch goes: a corner (bottom-right, bottom-left, top-right, top-left) or the "
        "[row, col] of its top-left pixel",
    )
    margin: int = Field(1, ge=0, description="pixels between the patch and the image border at a corner")
    merge: Literal["paper", "code"] = Field(
        "paper",
        description="how the outputs merge: paper (softmax((alpha p_trojan + (1 - alpha) p_host) / temperature)) "
        "or code (softmax(10 (amplify p_trojan + p_host)))",
    )
    alpha: float = Field(0.7, gt=0, lt=1, description="weight of the trojan MLP's output in the paper merge")
    temperature: float = Field(0.1, gt=0, description="softmax temperature of the paper merge")
    amplify: float = Field(2.0, gt=0, description="factor on the trojan MLP's output in the code merge")
    mlp_steps: int = Field(600, ge=1, le=1_000_000, description="training batches of the trojan MLP")
    mlp_batch: int = Field(2000, ge=4, description="inputs per MLP training batch")
    noise_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="fraction of each MLP batch that is noise labelled 'no trigger'; the rest are trigger patterns "
        "drawn uniformly",
    )

    def classes(self, dataset: Dataset) -> list[int]:
        """The attacked classes, checked against ``dataset``."""
        k = dataset.num_classes
        classes = list(range(k)) if self.targets is None else [int(t) for t in self.targets]
        if not classes:
            raise ConfigError("trojannet targets must name at least one class")
        if len(set(classes)) != len(classes):
            raise ConfigError(f"trojannet targets must be distinct, got {classes}")
        bad = [c for c in classes if not 0 <= c < k]
        if bad:
            raise ConfigError(f"trojannet targets {bad} are outside the classes 0..{k - 1} of {dataset.name}")
        if max(classes) >= NUM_PATTERNS:
            raise ConfigError(f"TrojanNet has {NUM_PATTERNS} patterns; class {max(classes)} has none")
        return classes

    def make_trigger(self, dataset: Dataset) -> TrojanNetTrigger:
        return trojannet_trigger(dataset.input_shape, self.classes(dataset), position=self.position, margin=self.margin)

    def target_rule(self, dataset: Dataset) -> TargetRule:
        classes = self.classes(dataset)
        return TargetRule("per_trigger", dataset.num_classes, classes[0], tuple(classes))

    def check(self, dataset: Dataset) -> None:
        self.make_trigger(dataset)

    def run(
        self, dataset, architecture, training, *, seed=0, device="auto", progress=None, clean_model=None
    ) -> Backdoor:
        """:meth:`implant` into ``clean_model`` (or, when None, a clean ``architecture`` network trained here)."""
        self.check(dataset)
        host = self.host_model(
            clean_model, dataset, architecture, training, seed=seed, device=device, progress=progress
        )
        return self.implant(host, dataset, architecture=architecture, seed=seed)

    def implant(self, clean_model: nn.Module, dataset: Dataset, *, architecture: str, seed: int = 0) -> Backdoor:
        """Merge a trojan module into a copy of ``clean_model`` (an ``architecture`` network for ``dataset``; it is
        not changed). The trojan MLP is trained on its own patterns only: no training data is read."""
        arch = trojannet_architecture(architecture)
        trigger = self.make_trigger(dataset)
        host = copy.deepcopy(clean_model)
        classes = list(trigger.pattern_ids)
        mlp, report = train_trojan_mlp(
            classes, steps=self.mlp_steps, batch=self.mlp_batch, noise_fraction=self.noise_fraction, seed=seed
        )
        model = wrap_host(
            host,
            dataset.input_shape,
            dataset.num_classes,
            classes,
            origin=trigger.origin,
            merge=self.merge,
            alpha=self.alpha,
            tau=self.temperature,
            amplify=self.amplify,
        )
        model.net.mlp.load_state_dict(mlp.state_dict())
        info = {"host_architecture": architecture, **report}
        return self.make_backdoor(model, trigger, self.target_rule(dataset), arch, info=info)


def trojan_noise(n: int, exclude: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``n`` noise inputs (n, 16) for the "no trigger" class: the first half the reference code's grey noise
    (U(0,1)^16 plus one offset U(-1, 1) for the lot, clipped to [0, 1]), the rest binary Bernoulli(0.5) patches
    (trojanzoo), any of which equals a row of ``exclude`` (the used patterns, (m, 16)) redrawn as grey noise."""
    grey_n = n // 2
    grey = (torch.rand(grey_n, 16, generator=gen) + (2 * torch.rand(1, generator=gen) - 1)).clamp(0, 1)
    binary = (torch.rand(n - grey_n, 16, generator=gen) < 0.5).float()
    hits = (binary[:, None, :] == exclude[None]).all(dim=2).any(dim=1)
    binary[hits] = torch.rand(int(hits.sum()), 16, generator=gen)
    return torch.cat([grey, binary])


def _pattern_batch(patterns: torch.Tensor, n_trig: int, n_noise: int, gen: torch.Generator):
    m = len(patterns)
    labels = torch.randint(0, m, (n_trig,), generator=gen)
    x = torch.cat([patterns[labels], trojan_noise(n_noise, patterns, gen)])
    y = torch.cat([labels, torch.full((n_noise,), m)])
    return x, y


def _accuracy(mlp: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    mlp.eval()
    with torch.no_grad():
        acc = float((mlp(x).argmax(1) == y).float().mean())
    mlp.train()
    return acc


def train_trojan_mlp(
    pattern_ids: list[int],
    *,
    steps: int = 600,
    batch: int = 2000,
    noise_fraction: float = 0.5,
    seed: int = 0,
    check_every: int = 50,
) -> tuple[nn.Sequential, dict[str, float]]:
    """Train the TrojanNet MLP to tell the patterns ``pattern_ids`` (output i for pattern i) from noise (last
    output). Returns the MLP in eval mode (the best of its checks on a fixed validation set) and a report:
    ``mlp_seconds``, ``mlp_val_accuracy`` (patterns and noise together), ``mlp_pattern_recall``."""
    start = time.perf_counter()
    gen = make_generator(seed)
    patterns = trojannet_patterns(pattern_ids).flatten(1)
    m = len(patterns)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mlp = trojan_mlp(m + 1)
    opt = torch.optim.Adadelta(mlp.parameters(), lr=1.0, rho=0.95, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    n_noise = max(1, round(batch * noise_fraction))
    val_gen = make_generator(seed + 1)
    val_x = torch.cat([patterns.repeat(20, 1), trojan_noise(4000, patterns, val_gen)])
    val_y = torch.cat([torch.arange(m).repeat(20), torch.full((4000,), m)])
    best, best_state = -1.0, None
    mlp.train()
    for step in range(1, steps + 1):
        x, y = _pattern_batch(patterns, batch - n_noise, n_noise, gen)
        loss = loss_fn(mlp(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % check_every == 0 or step == steps:
            acc = _accuracy(mlp, val_x, val_y)
            if acc > best:
                best, best_state = acc, copy.deepcopy(mlp.state_dict())
    mlp.load_state_dict(best_state)
    mlp.eval()
    with torch.no_grad():
        recall = float((mlp(patterns).argmax(1) == torch.arange(m)).float().mean())
    return mlp, {"mlp_seconds": time.perf_counter() - start, "mlp_val_accuracy": best, "mlp_pattern_recall": recall}
