"""Load a model file from someone else without running their code.

Formats: TorchScript (``torch.jit.save``), ``torch.export`` programs (``.pt2``), ONNX (``.onnx``),
safetensors weights plus a registered architecture name, backdoorlab checkpoints, and plain state dicts.
Pickles are read with ``torch.load(weights_only=True)`` only; a pickle that needs more (a whole pickled
``nn.Module``) is refused unless the caller passes ``trust_pickle=True``.
"""

from __future__ import annotations

import re
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelFileError
from .architectures import Normalize, build_model
from .checkpoint import FORMAT, load_checkpoint

FORMATS = ("checkpoint", "torchscript", "export", "onnx", "safetensors", "state_dict", "pickle")


@dataclass
class LoadedModel:
    """A model that takes (N, C, H, W) pixels in [0, 1] and returns (N, K) scores, and what is known of it."""

    model: nn.Module
    format: str
    input_shape: tuple[int, int, int]
    num_classes: int
    architecture: str | None = None
    payload: dict | None = None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_line(err: BaseException) -> str:
    text = _ANSI.sub("", str(err)).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


class ExportedModule(nn.Module):
    """A ``torch.export`` program as a module on (N, C, H, W) batches of any size.

    An exported graph is frozen: it refuses ``.train()`` / ``.eval()`` ("Calling train() is not supported yet"),
    which every defense calls, so ``train`` here only records the flag. A program exported with a fixed batch
    size (``torch.export.export(model, (x,))`` with one example, the usual third-party call) is vectorized over
    the batch with ``torch.vmap`` when that size is 1, else run on chunks of that size, the last one padded.
    """

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        self.program = program.module()
        shape = _exported_input(program)
        self.batch = shape[0] if shape is not None and isinstance(shape[0], int) else None

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch is None or len(x) == self.batch:
            return self.program(x)
        if self.batch == 1:
            return torch.vmap(lambda one: self.program(one[None])[0])(x)
        outs = []
        for chunk in x.split(self.batch):
            pad = self.batch - len(chunk)
            if pad:
                chunk = torch.cat([chunk, chunk[-1:].expand(pad, *chunk.shape[1:])])
            outs.append(self.program(chunk)[: self.batch - pad])
        return torch.cat(outs)


def _exported_input(program: torch.export.ExportedProgram) -> tuple | None:
    """The shape of the program's one user input as exported: ints where static, SymInts where dynamic."""
    names = list(program.graph_signature.user_inputs)
    if len(names) != 1:
        return None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == names[0]:
            val = node.meta.get("val")
            return tuple(val.shape) if val is not None else None
    return None


def _exported_shape(program: torch.export.ExportedProgram) -> tuple[int, int, int] | None:
    """(C, H, W) of the program's input when the export fixed them, else None."""
    shape = _exported_input(program)
    if shape is None or len(shape) != 4 or not all(isinstance(v, int) for v in shape[1:]):
        return None
    return tuple(int(v) for v in shape[1:])


def detect_format(path: Path) -> str:
    """The file's format, from its suffix and, for zip archives, its content."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".pt2":
        return "export"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
    return "pickle"


def _weights_only(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        if "Unsupported global" in text or "GLOBAL" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise ModelFileError(
                f"{path}: refusing to unpickle it: it needs code{what} that loading would run; export the model to "
                "TorchScript, torch.export or ONNX, or, if you trust its sender, pass --trust-pickle"
            ) from None
        raise ModelFileError(f"{path}: not a readable model file ({_first_line(err)})") from None


def _rebuild(architecture: str | None, state: dict, input_shape, num_classes, mean, std, path: Path) -> nn.Module:
    if architecture is None:
        raise ModelFileError(f"{path} holds only weights: pass --arch (a registered architecture) to rebuild it")
    if input_shape is None or num_classes is None:
        raise ModelFileError(f"{path} holds only weights: pass --input-shape C,H,W and --num-classes K")
    model = build_model(architecture, input_shape, num_classes, mean, std)
    if not any(k.startswith("normalize.") for k in state):
        state = {
            **{f"net.{k}" if not k.startswith("net.") else k: v for k, v in state.items()},
            **{f"normalize.{k}": v for k, v in model.normalize.state_dict().items()},
        }
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFileError(f"{path}: the weights do not fit {architecture} ({_first_line(err)})") from None
    return model


def _read(path: Path, fmt: str, architecture, input_shape, num_classes, mean, std, trust_pickle) -> tuple:
    """(module, architecture, payload, declared input shape) for each format."""
    if fmt == "onnx":
        from .onnx_graph import load_onnx

        module, shape = load_onnx(path)
        return module, None, None, shape
    if fmt == "torchscript":
        try:
            return torch.jit.load(str(path), map_location="cpu"), None, None, None
        except Exception as err:
            raise ModelFileError(f"{path}: not a loadable TorchScript file ({_first_line(err)})") from None
    if fmt == "export":
        try:
            program = torch.export.load(str(path))
            return ExportedModule(program), None, None, _exported_shape(program)
        except Exception as err:
            raise ModelFileError(f"{path}: not a loadable torch.export program ({_first_line(err)})") from None
    if fmt == "safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ModelFileError("reading safetensors needs: pip install safetensors") from None
        try:
            state = load_file(str(path))
        except Exception as err:
            raise ModelFileError(f"{path}: not a readable safetensors file ({_first_line(err)})") from None
        return _rebuild(architecture, state, input_shape, num_classes, mean, std, path), architecture, None, None
    if trust_pickle:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    else:
        obj = _weights_only(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        model, payload = load_checkpoint(path)
        return model, payload["architecture"], payload, tuple(payload["input_shape"])
    if isinstance(obj, nn.Module):
        return obj, None, None, None
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _rebuild(architecture, obj, input_shape, num_classes, mean, std, path), architecture, None, None
    raise ModelFileError(f"{path}: holds a {type(obj).__name__}, not a model or a state dict")


def load_model_file(
    path: str | Path,
    *,
    architecture: str | None = None,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    trust_pickle: bool = False,
    data_shape: Sequence[int] | None = None,
) -> LoadedModel:
    """Load ``path`` (any of ``FORMATS``) as a model on [0, 1] pixels, in eval mode.

    ``mean``/``std`` put a normalization layer in front of a foreign model that expects normalized inputs
    (our own checkpoints carry theirs). ``input_shape`` (C, H, W) and ``num_classes`` are checked against the
    model with one forward pass; they are needed for weights-only files. ``data_shape``, the (C, H, W) of the
    clean samples at hand, is the input shape when neither ``input_shape`` nor the file gives one (a traced
    TorchScript module does not record it).
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: model file not found")
    fmt = detect_format(p)
    shape = tuple(int(v) for v in input_shape) if input_shape is not None else None
    module, arch, payload, declared = _read(p, fmt, architecture, shape, num_classes, mean, std, trust_pickle)
    shape = shape or declared or (tuple(int(v) for v in data_shape) if data_shape is not None else None)
    if shape is None:
        raise ModelFileError(f"{p}: the file does not say its input shape: pass --input-shape C,H,W")
    if declared is not None and tuple(declared) != shape:
        raise ModelFileError(f"{p}: the model takes {tuple(declared)} inputs, not {shape}")
    if payload is None and arch is None:
        # a plain container around foreign modules (ScriptModule, exported GraphModule), so generic code such as
        # deepcopy(model).requires_grad_(False) works on every format
        layers = [("normalize", Normalize(mean, std))] if mean is not None and std is not None else []
        module = nn.Sequential(OrderedDict([*layers, ("net", module)]))
    if payload is None and arch is None:
        module.requires_grad_(False)  # scanned, not trained; and copies of ScriptModules keep leaf parameters
    for child in module.modules():
        if not isinstance(child, torch.fx.GraphModule):  # an exported program refuses .eval(); it is frozen
            child.training = False
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *shape))
    except Exception as err:
        raise ModelFileError(f"{p}: the model fails on inputs of shape {shape} ({_first_line(err)})") from None
    if out.ndim != 2:
        raise ModelFileError(f"{p}: the model's output has shape {tuple(out.shape)}; expected (N, classes)")
    k = int(out.shape[1])
    if num_classes is not None and num_classes != k:
        raise ModelFileError(f"{p}: the model has {k} outputs but --num-classes is {num_classes}")
    return LoadedModel(module, fmt if payload is None else "checkpoint", shape, k, arch, payload)
