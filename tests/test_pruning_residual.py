"""Fine-Pruning on a residual network: the default prunes the post-ReLU neurons that feed the classifier
(``relu(net.bn(.))`` in PreAct-ResNet), where zeroing a channel silences it, not the last residual branch's conv,
whose output the shortcut bypasses."""

import copy

import torch
from torch import nn

from backdoorlab.data import Split
from backdoorlab.defenses import DEFENSES
from backdoorlab.models.architectures import Normalize, PreActResNet18
from backdoorlab.models.channels import bake_pruning, channel_means, find_site

SHAPE = (1, 8, 8)


def _small_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("normalize", Normalize((0.5,), (0.25,)))
    model.add_module("net", PreActResNet18(1, 4, widths=(4, 4, 8, 8)))
    with torch.no_grad():  # BatchNorm statistics that leave some channels negative before the ReLU
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1, generator=torch.Generator().manual_seed(1))
                m.bias.uniform_(-0.5, 1.0, generator=torch.Generator().manual_seed(2))
    return model.eval()


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the classifier's pooling sees: relu(net.bn(.)), (N, C, H, W)."""
    seen = {}
    handle = model.net.bn.register_forward_hook(lambda m, i, o: seen.update(out=torch.relu(o)))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["out"]


def test_default_site_is_the_post_relu_neurons_feeding_the_classifier():
    model = _small_resnet()
    site = find_site(model)
    assert (site.layer, site.chain, site.channels, site.relu) == ("net.bn", (), 8, True)
    assert find_site(model, "net.bn") == site  # naming it reads it after the ReLU too
    assert not find_site(model, "net.layers.7.conv2").relu
    x = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    means = channel_means(model, x, site)
    assert torch.allclose(means, _features(model, x).mean(dim=(0, 2, 3)), atol=1e-6)
    assert (means >= 0).all()


def test_pruned_neurons_are_silent_where_the_classifier_reads_them():
    model = _small_resnet()
    site = find_site(model)
    x = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    pruned = [1, 4, 6]
    baked = bake_pruning(copy.deepcopy(model), site, pruned)
    assert _features(baked, x)[:, pruned].abs().max() == 0
    # the same function as the original network with those features removed from the classifier
    cut = copy.deepcopy(model)
    with torch.no_grad():
        cut.net.fc.weight[:, pruned] = 0
    assert torch.allclose(baked(x), cut(x), atol=1e-5)


def test_pruning_repair_on_a_residual_network_prunes_the_classifier_neurons():
    model = _small_resnet()
    x = torch.rand(40, *SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    pruning = DEFENSES.build("pruning", {"prune_ratio": 0.5})
    repaired = pruning.repair(model, Split(x, y), seed=0, device="cpu", progress=False)
    silent = _features(repaired, x).abs().amax(dim=(0, 2, 3)) == 0
    assert int(silent.sum()) >= 4
