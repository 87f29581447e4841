"""Evaluate a model under many channel masks at one site, running the part before the site only once.

A pruning curve needs the model's predictions after 0, 1, 2, ... C pruned channels. Only the layers after the
site change with the mask, so :class:`MaskedReplay` splits the model there with ``torch.fx``: the head runs once
per input and its outputs are kept; each mask then runs only the tail. Models that ``torch.fx`` cannot trace
(data-dependent control flow) fall back to full forward passes under a :class:`ChannelMask` hook, which give
the same numbers, only slower.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx, nn

from ..utils.device import resolve_device
from .channels import ChannelMask, ChannelSite, apply_keep, evaluating, keep_vector


def split_at(model: nn.Module, module: str) -> tuple[fx.GraphModule, fx.GraphModule] | None:
    """(head, tail) of ``model`` cut after the single call of submodule ``module``; ``None`` when it cannot be cut.

    ``head(x)`` returns a tuple whose first item is that module's output, followed by every other value computed
    before the cut that the rest of the model reads (a residual shortcut, a batch size); ``tail(*that tuple)``
    returns the model's output. Both share ``model``'s parameters.
    """
    try:
        traced = fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - fx raises many types on untraceable code; we then use full forward passes
        return None
    nodes = list(traced.graph.nodes)
    sites = [n for n in nodes if n.op == "call_module" and n.target == module]
    if len(sites) != 1:
        return None
    cut = nodes.index(sites[0]) + 1
    before, after = nodes[:cut], nodes[cut:]
    inside = set(before)
    carried = [n for n in before if n is not sites[0] and n.op != "get_attr" and any(u not in inside for u in n.users)]
    boundary = [sites[0], *carried]

    head_graph = fx.Graph()
    head_env: dict[fx.Node, fx.Node] = {}
    for n in before:
        head_env[n] = head_graph.node_copy(n, lambda a: head_env[a])
    head_graph.output(tuple(head_env[b] for b in boundary))

    tail_graph = fx.Graph()
    tail_env: dict[fx.Node, fx.Node] = {b: tail_graph.placeholder(f"boundary_{i}") for i, b in enumerate(boundary)}
    for n in after:
        for a in n.all_input_nodes:
            if a not in tail_env:  # a parameter or buffer read before the cut: read it again in the tail
                tail_env[a] = tail_graph.node_copy(a, lambda b: tail_env[b])
        tail_env[n] = tail_graph.node_copy(n, lambda a: tail_env[a])
    return fx.GraphModule(traced, head_graph), fx.GraphModule(traced, tail_graph)


class MaskedReplay:
    """Logits of ``model`` on ``x`` (N, C, H, W) with any set of channels of ``site`` zeroed.

    Built once per (model, inputs); ``logits(pruned)`` is then cheap. The model must not change meanwhile.
    """

    def __init__(
        self,
        model: nn.Module,
        site: ChannelSite,
        x: torch.Tensor,
        *,
        batch_size: int = 512,
        device: str | torch.device = "auto",
    ) -> None:
        self.model, self.site, self.x, self.batch_size = model, site, x, batch_size
        self.device = resolve_device(device)
        parts = split_at(model, site.output)
        self._tail: fx.GraphModule | None = None
        self._cache: list[tuple] = []
        if parts is not None:
            # the traced copies hold their own references to the buffers a graph reads directly (get_attr:
            # Normalize's mean and std), which moving ``model`` does not move: move the copies themselves
            with torch.no_grad(), evaluating(model, self.device):
                head, tail = (part.to(self.device) for part in parts)
                self._cache = [head(x[i : i + batch_size].to(self.device)) for i in range(0, len(x), batch_size)]
            self._tail = tail

    @property
    def split(self) -> bool:
        """True when the model was cut at the site (False: full forward passes)."""
        return self._tail is not None

    @torch.no_grad()
    def logits(self, pruned: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """(N, K) logits on the CPU with channels ``pruned`` of the site zeroed."""
        keep = keep_vector(pruned, self.site.channels)
        with evaluating(self.model, self.device):
            if self._tail is not None:
                outs = [self._tail(apply_keep(vals[0], keep), *vals[1:]) for vals in self._cache]
            else:
                with ChannelMask(self.model, self.site, pruned):
                    outs = [
                        self.model(self.x[i : i + self.batch_size].to(self.device))
                        for i in range(0, len(self.x), self.batch_size)
                    ]
        return torch.cat([o.float().cpu() for o in outs]) if outs else torch.empty(0)

    def predict(self, pruned: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """(N,) predicted labels with channels ``pruned`` zeroed."""
        return self.logits(pruned).argmax(dim=1)


def pruning_curve(
    model: nn.Module,
    site: ChannelSite,
    order: torch.Tensor,
    x: torch.Tensor,
    targets: torch.Tensor,
    counts: Sequence[int],
    **kwargs,
) -> list[float]:
    """For each ``k`` in ``counts``: the fraction of ``x`` predicted as ``targets`` (N,) once the first ``k``
    channels of ``order`` are zeroed. With true labels this is accuracy; with the attacker's labels it is ASR."""
    if len(x) == 0:
        return [float("nan")] * len(counts)
    replay = MaskedReplay(model, site, x, **kwargs)
    return [float((replay.predict(order[:k]) == targets).float().mean()) for k in counts]
