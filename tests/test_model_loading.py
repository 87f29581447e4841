"""Loading third-party model files without running their code: every format, and the refusals."""

import os
import pickle

import pytest
import torch

from backdoorlab.errors import ModelFileError
from backdoorlab.models import build_model, save_checkpoint
from backdoorlab.models.loading import detect_format, load_model_file

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def model():
    m = build_model("cnn_small", SHAPE, 5, [0.4] * 3, [0.2] * 3, seed=0).eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def x():
    return torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(0))


def _export(model, x, fmt, path):
    if fmt == "torchscript":
        torch.jit.save(torch.jit.trace(model, x[:1]), path)
    elif fmt == "onnx":
        pytest.importorskip("onnx")
        torch.onnx.export(model, x[:1], path, input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    elif fmt == "export":
        program = torch.export.export(model, (x[:2],), dynamic_shapes=[{0: torch.export.Dim("n", min=1)}])
        torch.export.save(program, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), path)
    elif fmt == "checkpoint":
        save_checkpoint(path, model, architecture="cnn_small", input_shape=SHAPE, num_classes=5)
    elif fmt == "state_dict":
        torch.save(model.state_dict(), path)


@pytest.mark.parametrize(
    "fmt, suffix, kwargs",
    [
        ("torchscript", ".ts", {"input_shape": SHAPE}),
        ("onnx", ".onnx", {}),
        ("export", ".pt2", {"input_shape": SHAPE}),
        ("safetensors", ".safetensors", {"architecture": "cnn_small", "input_shape": SHAPE, "num_classes": 5}),
        ("checkpoint", ".pt", {}),
        ("state_dict", ".pth", {"architecture": "cnn_small", "input_shape": SHAPE, "num_classes": 5}),
    ],
)
def test_each_format_gives_the_same_predictions_and_gradients(tmp_path, model, x, fmt, suffix, kwargs):
    path = tmp_path / f"m{suffix}"
    _export(model, x, fmt, path)
    loaded = load_model_file(path, **kwargs)
    assert loaded.num_classes == 5 and loaded.input_shape == SHAPE
    assert torch.allclose(loaded.model(x), model(x), atol=1e-5)
    xg = x.clone().requires_grad_()
    loaded.model(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/backdoorlab-pwned",))


def test_malicious_pickle_does_not_execute(tmp_path):
    marker = "/tmp/backdoorlab-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(ModelFileError, match="refusing to unpickle it"):
        load_model_file(path, input_shape=SHAPE)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelFileError, match="refusing to unpickle|not a readable model file"):
        load_model_file(plain, input_shape=SHAPE)
    assert not os.path.exists(marker)


def test_pickled_module_needs_trust(tmp_path, model, x):
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(ModelFileError, match="--trust-pickle"):
        load_model_file(path, input_shape=SHAPE)
    loaded = load_model_file(path, input_shape=SHAPE, trust_pickle=True)
    assert torch.allclose(loaded.model(x), model(x))


@pytest.mark.parametrize(
    "setup, kwargs, message",
    [
        (lambda p: p.write_bytes(b"\x00garbage"), {"input_shape": SHAPE}, "not a readable model file"),
        (lambda p: None, {}, "model file not found"),
    ],
)
def test_bad_files(tmp_path, setup, kwargs, message):
    path = tmp_path / "m.pt"
    setup(path)
    with pytest.raises(ModelFileError, match=message):
        load_model_file(path, **kwargs)


def test_shape_and_class_checks(tmp_path, model, x):
    path = tmp_path / "m.ts"
    _export(model, x, "torchscript", path)
    assert detect_format(path) == "torchscript"
    with pytest.raises(ModelFileError, match="does not say its input shape"):
        load_model_file(path)
    with pytest.raises(ModelFileError, match="fails on inputs of shape"):
        load_model_file(path, input_shape=(4, 32, 32))
    with pytest.raises(ModelFileError, match="has 5 outputs but --num-classes is 10"):
        load_model_file(path, input_shape=SHAPE, num_classes=10)
    weights = tmp_path / "w.pth"
    _export(model, x, "state_dict", weights)
    with pytest.raises(ModelFileError, match="pass --arch"):
        load_model_file(weights, input_shape=SHAPE)
    with pytest.raises(ModelFileError, match="do not fit badnet_cnn"):
        load_model_file(weights, architecture="badnet_cnn", input_shape=SHAPE, num_classes=5)


def test_onnx_unsupported_op_is_named(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Erf", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "erf.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(ModelFileError, match="ONNX op Erf is not supported"):
        load_model_file(path, input_shape=(1, 2, 2))
