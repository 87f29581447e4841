"""Run an ONNX image classifier as a differentiable torch module, without executing anything from the file.

The file's graph is read with the ``onnx`` package (protobuf, no code) and interpreted node by node with
torch operations, so gradients flow to the input (which Neural Cleanse and DeepInspect need).

Why not onnx2torch: it imports torchvision (for two detection ops), whose only build on this platform is
several GB; the ops of image classifiers are few, and this interpreter covers them. An op outside the list
is refused with its name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFileError


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads(pads: list[int] | None, dims: int) -> list[int]:
    """ONNX pads (begin..., end...) -> F.pad order (last dim first: left, right, top, bottom)."""
    if not pads:
        return [0] * (2 * dims)
    begin, end = pads[:dims], pads[dims:]
    out: list[int] = []
    for i in reversed(range(dims)):
        out += [int(begin[i]), int(end[i])]
    return out


def _conv(x, w, b=None, *, strides=(1, 1), pads=None, dilations=(1, 1), group=1, **_):
    return F.conv2d(F.pad(x, _pads(pads, 2)), w, b, stride=tuple(strides), dilation=tuple(dilations), groups=group)


def _pool(kind: str):
    def run(x, *, kernel_shape, strides=None, pads=None, ceil_mode=0, count_include_pad=0, **_):
        strides = tuple(strides or kernel_shape)
        if kind == "max":
            padded = F.pad(x, _pads(pads, 2), value=float("-inf"))
            return F.max_pool2d(padded, tuple(kernel_shape), strides, ceil_mode=bool(ceil_mode))
        if pads and any(pads) and not count_include_pad:
            ones = F.avg_pool2d(
                F.pad(torch.ones_like(x[:1, :1]), _pads(pads, 2)),
                tuple(kernel_shape),
                strides,
                ceil_mode=bool(ceil_mode),
            )
            total = F.avg_pool2d(F.pad(x, _pads(pads, 2)), tuple(kernel_shape), strides, ceil_mode=bool(ceil_mode))
            return total / ones
        return F.avg_pool2d(F.pad(x, _pads(pads, 2)), tuple(kernel_shape), strides, ceil_mode=bool(ceil_mode))

    return run


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, **_):
    a = a.t() if transA else a
    b = b.t() if transB else b
    out = alpha * (a @ b)
    return out + beta * c if c is not None else out


def _batchnorm(x, scale, bias, mean, var, *, epsilon=1e-5, **_):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=epsilon)


def _flatten(x, *, axis=1, **_):
    return x.reshape(int(np.prod(x.shape[:axis])) if axis else 1, -1)


def _reshape(x, shape, **_):
    dims = [int(v) for v in shape.tolist()]
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _clip(x, low=None, high=None, *, min=None, max=None, **_):  # noqa: A002
    low = low if low is not None else min
    high = high if high is not None else max
    return torch.clamp(
        x,
        low if low is None or not torch.is_tensor(low) else float(low),
        high if high is None or not torch.is_tensor(high) else float(high),
    )


def _softmax(fn):
    return lambda x, *, axis=-1, **_: fn(x, dim=axis)


def _unsqueeze(x, axes=None, **kw):
    axes = kw.get("axes", axes)
    for a in sorted(int(v) for v in (axes.tolist() if torch.is_tensor(axes) else axes)):
        x = x.unsqueeze(a)
    return x


def _squeeze(x, axes=None, **kw):
    axes = kw.get("axes", axes)
    if axes is None:
        return x.squeeze()
    for a in sorted((int(v) for v in (axes.tolist() if torch.is_tensor(axes) else axes)), reverse=True):
        x = x.squeeze(a)
    return x


OPS: dict[str, Callable] = {
    "Conv": _conv,
    "Relu": lambda x, **_: F.relu(x),
    "LeakyRelu": lambda x, *, alpha=0.01, **_: F.leaky_relu(x, alpha),
    "Sigmoid": lambda x, **_: torch.sigmoid(x),
    "Tanh": lambda x, **_: torch.tanh(x),
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda x, **_: x.mean(dim=(2, 3), keepdim=True),
    "GlobalMaxPool": lambda x, **_: x.amax(dim=(2, 3), keepdim=True),
    "Gemm": _gemm,
    "MatMul": lambda a, b, **_: a @ b,
    "Add": lambda a, b, **_: a + b,
    "Sub": lambda a, b, **_: a - b,
    "Mul": lambda a, b, **_: a * b,
    "Div": lambda a, b, **_: a / b,
    "BatchNormalization": _batchnorm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Identity": lambda x, **_: x,
    "Dropout": lambda x, *rest, **_: x,
    "Softmax": _softmax(torch.softmax),
    "LogSoftmax": _softmax(torch.log_softmax),
    "Clip": _clip,
    "Concat": lambda *xs, axis, **_: torch.cat(xs, dim=axis),
    "Transpose": lambda x, *, perm=None, **_: x.permute(*perm) if perm else x.permute(*reversed(range(x.ndim))),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Shape": lambda x, **_: torch.tensor(x.shape, dtype=torch.int64),
    "Gather": lambda x, i, *, axis=0, **_: torch.index_select(x, axis, i.flatten().long()).reshape(
        (*x.shape[:axis], *i.shape, *x.shape[axis + 1 :])
    ),
}


class OnnxModule(nn.Module):
    """A torch module that evaluates an ONNX graph with one image input and one logits output.

    Initializers become buffers (the model's weights); the input is (N, C, H, W) float32.
    """

    def __init__(self, graph) -> None:
        super().__init__()
        from onnx import numpy_helper

        self.nodes = []
        self._consts: dict[str, str] = {}
        for i, init in enumerate(graph.initializer):
            buf = f"w{i}"
            self.register_buffer(buf, torch.from_numpy(numpy_helper.to_array(init).copy()))
            self._consts[init.name] = buf
        for node in graph.node:
            if node.op_type == "Constant":
                value = numpy_helper.to_array(_attrs(node)["value"]).copy()
                buf = f"c{len(self._consts)}"
                self.register_buffer(buf, torch.from_numpy(value))
                self._consts[node.output[0]] = buf
                continue
            if node.op_type not in OPS:
                raise ModelFileError(f"ONNX op {node.op_type} is not supported (supported: {', '.join(sorted(OPS))})")
            self.nodes.append((node.op_type, list(node.input), list(node.output), _attrs(node)))
        inputs = [i.name for i in graph.input if i.name not in self._consts]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ModelFileError(
                f"expected an ONNX graph with one input and one output, got {len(inputs)} and {len(graph.output)}"
            )
        self.input_name, self.output_name = inputs[0], graph.output[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {name: getattr(self, buf) for name, buf in self._consts.items()}
        values[self.input_name] = x
        for op, ins, outs, attrs in self.nodes:
            args = [values[n] if n else None for n in ins]
            while args and args[-1] is None:
                args.pop()
            values[outs[0]] = OPS[op](*args, **attrs)
        return values[self.output_name]


def load_onnx(path: Path) -> tuple[nn.Module, tuple[int, ...] | None]:
    """(module, input shape (C, H, W) when the file declares it) from an ONNX file."""
    try:
        import onnx
    except ImportError:
        raise ModelFileError("reading ONNX files needs the onnx package: pip install 'backdoorlab[onnx]'") from None
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:
        raise ModelFileError(f"{path}: not a valid ONNX model ({str(err).splitlines()[0][:200]})") from None
    module = OnnxModule(model.graph).eval()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value for d in dims[1:]) if len(dims) == 4 and all(d.dim_value for d in dims[1:]) else None
    return module, shape
