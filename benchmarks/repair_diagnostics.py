"""Why ANP and I-BAU leave BadNets in place on MNIST-5k's ``badnet_cnn`` (issue 19): a diagnostic, not a benchmark.

For BadNets at 10% (the shared model cache's models, seeds from ``BENCH_SEEDS``), with the defender's 500 val images:

- **ANP's masks**: the test ASR and CA at every pruning threshold of its sweep (the report's curve; test data only
  describe what the clean-data rule chose, they choose nothing), with the paper-faithful neurons of a network
  without BatchNorm (conv channels) and, as a probe, with the hidden fully connected layer's 512 neurons masked too;
- **I-BAU's universal perturbation**: the share of the defender's images that the first round's perturbation
  (L2 radius 10) sends to the attack's target, against the share the real trigger sends there.

Run: ``python -m benchmarks.repair_diagnostics`` (``BENCH_DIAG_SET``: ``mnist`` by default, or ``colour``;
``BENCH_DIAG_ANP_ITERATIONS``: 500 by default, the paper's 2000 is slower; ``BENCH_DIAG_HIDDEN=0`` skips the fc probe).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from backdoorlab.defenses.repair import anp as anp_module
from backdoorlab.defenses.repair.anp import ANP
from backdoorlab.defenses.repair.i_bau import IBAU
from backdoorlab.defenses.repair.neurons import channels_of, minibatches, neuron_layers, working_copy
from backdoorlab.experiments.evaluation import make_probes
from backdoorlab.utils.seeding import make_generator

from .common import bench_models, bench_seeds, bench_setting, poisoning_attack, print_table


def with_hidden_linear(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """ANP's neurons plus every hidden ``nn.Linear`` (all but the classifier head)."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][:-1]
    return neuron_layers(model) + linears


def neurons_of(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else channels_of(module)


def anp_sweep(model: nn.Module, val, probes, seed: int, hidden_linear: bool) -> list[list[object]]:
    """Rows (threshold, pruned neurons, val acc, test CA, test ASR) of ANP's sweep; ``*`` marks the rule's choice."""
    anp = ANP(iterations=int(os.environ.get("BENCH_DIAG_ANP_ITERATIONS", 500)))
    if hidden_linear:
        anp_module.neuron_layers, anp_module.channels_of = with_hidden_linear, neurons_of
    try:
        masks = anp.learn_masks(model, val, seed=seed, device="cpu")
        val_acc = anp.curve(model, masks, val, torch.device("cpu"))
        ca = anp.curve(model, masks, probes.test, torch.device("cpu"))
        asr = anp.curve(model, masks, probes.triggered, torch.device("cpu"))
    finally:
        anp_module.neuron_layers, anp_module.channels_of = neuron_layers, channels_of
    chosen = anp.choose(val_acc)
    rows = []
    for i, t in enumerate(anp.grid()):
        pruned = sum(int((m < t).sum()) for m in masks)
        mark = "*" if t == chosen else ""
        rows.append([f"{t:.2f}{mark}", pruned, f"{val_acc[i]:.3f}", f"{ca[i]:.3f}", f"{asr[i]:.3f}"])
    return rows


def ibau_reach(model: nn.Module, val, triggered, target: int, seed: int) -> tuple[float, float, float]:
    """(share of val sent to ``target`` by I-BAU's first perturbation, by the real trigger, the perturbation's L2)."""
    ibau = IBAU()
    net, dev = working_copy(model, "cpu")
    gen = make_generator(seed)
    batches = [(val.x[i], val.y[i]) for i in minibatches(len(val), ibau.batch_size, gen)]
    delta = ibau._universal_perturbation(net, batches, dev)
    with torch.no_grad():
        by_delta = float((net(val.x + delta).argmax(1) == target).float().mean())
        by_trigger = float((net(triggered.x).argmax(1) == target).float().mean())
    return by_delta, by_trigger, float(delta.norm())


def main() -> bool:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 1)))
    key = os.environ.get("BENCH_DIAG_SET", "mnist")
    setting = bench_setting(key)
    ds = setting.dataset
    for seed in bench_seeds():
        bd = bench_models().backdoor(setting, poisoning_attack("BadNets", 0.1), seed)
        probes = make_probes(bd, ds.test)
        for hidden in (False, True) if os.environ.get("BENCH_DIAG_HIDDEN", "1") == "1" else (False,):
            print(f"\n{key} BadNets 10%, seed {seed}: ANP, neurons = conv/BN channels{' + hidden fc' * hidden}")
            rows = anp_sweep(bd.model, ds.val, probes, seed, hidden)
            print_table(["threshold (* chosen)", "pruned", "val acc", "test CA", "test ASR"], rows)
        target = int(probes.triggered.y[0])  # all-to-one
        reach, real, norm = ibau_reach(bd.model, ds.val, make_probes(bd, ds.val).triggered, target, seed)
        print(
            f"I-BAU round-1 perturbation: L2 {norm:.2f}, sends {reach:.3f} of val to the target "
            f"(the trigger sends {real:.3f} of the non-target val images)"
        )
    return True


if __name__ == "__main__":
    main()
