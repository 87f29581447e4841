"""Device placement on the CPU: the ``meta`` device stands for the GPU a CPU-only suite does not have.

A tensor left on the CPU meets a ``meta`` one and torch raises "... is not on the expected device meta" (the
CUDA run's "Expected all tensors to be on the same device"). Meta tensors hold no data, so a run that gets through
its forward passes ends when it copies results back to the CPU ("Cannot copy out of meta tensor"): that
NotImplementedError is the sign that every tensor followed the device.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backdoorlab.models import build_model, predict_logits
from backdoorlab.models.channels import evaluating, find_site
from backdoorlab.models.loading import load_model_file
from backdoorlab.models.placement import check_placement, misplaced, module_device, on_device
from backdoorlab.models.replay import MaskedReplay, split_at

from .test_model_loading import SHAPE, _export

META = torch.device("meta")


def runs_on_meta(fn) -> None:
    """Run ``fn``; fail when a tensor was left off the meta device, pass when it only fails to copy results back."""
    try:
        fn()
    except NotImplementedError as err:
        assert "meta" in str(err)
    except RuntimeError as err:
        raise AssertionError(f"a tensor did not follow the device: {err}") from None


class BufferOnly(nn.Module):
    """Weights as buffers and no parameter, like a loaded ONNX graph."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(3, 4))

    def forward(self, x):
        return x.flatten(1) @ self.w.t()


def test_misplaced_names_tensors_off_the_device():
    m = build_model("badnet_cnn", (1, 8, 8), 10, [0.5], [0.2], seed=0)
    assert misplaced(m, "cpu") == [] and module_device(m) == torch.device("cpu")
    m.normalize.to(META)
    assert misplaced(m, "cpu") == ["normalize.mean@meta", "normalize.std@meta"]
    with pytest.raises(AssertionError, match="2 tensor"):
        check_placement(m, "cpu")
    assert module_device(BufferOnly()) == torch.device("cpu") and module_device(nn.ReLU()) is None


def test_a_model_without_parameters_is_moved_by_its_buffers():
    model, x = BufferOnly(), torch.rand(5, 1, 2, 2)
    seen = []

    def inside():
        with on_device(model, META):
            seen.append(misplaced(model, META))

    runs_on_meta(inside)
    assert seen == [[]]
    runs_on_meta(lambda: predict_logits(model, x, device=META))

    def evaluate():
        with evaluating(model, META):
            model(x.to(META))

    runs_on_meta(evaluate)


def test_on_device_restores_the_model():
    model = BufferOnly().train()
    with on_device(model, "cpu"):
        pass
    with evaluating(model, torch.device("cpu")):
        assert not model.training
    assert model.training and module_device(model) == torch.device("cpu")


@pytest.mark.parametrize("architecture", ["badnet_cnn", "cnn_small"])
def test_pruning_replay_moves_its_traced_copies(architecture):
    model = build_model(architecture, (3, 16, 16), 5, [0.4] * 3, [0.2] * 3, seed=0).eval()
    site = find_site(model)
    head, tail = split_at(model, site.output)
    model.to(META)  # what the replay did: move the model after tracing; the traced copy of Normalize stays behind
    assert "normalize.mean@cpu" in misplaced(head, META)
    model.to_empty(device="cpu")
    runs_on_meta(lambda: MaskedReplay(model, site, torch.rand(6, 3, 16, 16), device=META))


FORMATS = [
    pytest.param(
        "torchscript",
        ".ts",
        {"input_shape": SHAPE},
        marks=pytest.mark.skip(
            reason="a ScriptModule's parameters cannot be swapped for meta ones (it moves to CUDA in place; issue 24)"
        ),
    ),
    ("onnx", ".onnx", {}),
    ("export", ".pt2", {"input_shape": SHAPE}),
    ("safetensors", ".safetensors", {"architecture": "cnn_small", "input_shape": SHAPE, "num_classes": 5}),
    ("checkpoint", ".pt", {}),
]


@pytest.mark.parametrize("fmt, suffix, kwargs", FORMATS)
def test_each_model_format_moves_whole(tmp_path, fmt, suffix, kwargs):
    model = build_model("cnn_small", SHAPE, 5, [0.4] * 3, [0.2] * 3, seed=0).eval()
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    path = tmp_path / f"m{suffix}"
    _export(model, x, fmt, path)
    loaded = load_model_file(path, **kwargs).model
    assert module_device(loaded) == torch.device("cpu")
    loaded.to(META)
    check_placement(loaded, META, fmt)
    assert loaded(x.to(META)).shape == (4, 5)
    runs_on_meta(lambda: predict_logits(load_model_file(path, **kwargs).model, x, device=META))
