"""``backdoorlab scan-data``: find the poisoned samples of a training set the user holds.

The data (an ``.npz`` with ``x``/``y`` or ``x_train``/``y_train``, or an image folder with one sub-folder per
class) is the training set to scan. The representations come from ``--model`` when given, else from a network the
toolkit trains on the data (the one recipe). The default detector is SCAn, chosen before measuring because it
alone carries a dataset-level test: a class is contaminated when its normalized statistic exceeds e, which under
a normal null flags a clean class with probability 0.33% (about 3% for a clean 10-class set). Measured on clean
data (``python -m benchmarks data_detectors``, 10 seeded 90% samples each, no model given): 0 of 10 MNIST-5k scans
and 2 of 10 scans of the 1,797 8x8 digits raised "poison found" (docs/data-detectors.md). The digits' rate
(Clopper-Pearson 95% interval 0.03-0.56) is above the 3% the normal null predicts. "Poison found" (exit 1) is that
test. Its global model needs clean data: ``--clean`` (a folder or ``.npz``), else the scanned data itself (a small
poisoned minority then inflates the variation model a little: our departure from the paper, which assumes a clean
set).

Writes ``suspected.csv`` (index, label, score of each flagged sample, most suspicious first), ``summary.json`` and
``page.html`` (the most suspicious images), each atomically.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import Dataset, Split
from ..data.base import channel_stats, to_labels, to_nchw_float
from ..data.folders import folder_shape, load_image_folder
from ..defenses import DEFENSES
from ..errors import DataError
from ..models import TrainingConfig, train_new_model
from ..models.loading import load_model_file
from ..utils.files import write_atomic


def read_training_data(spec: str) -> Split:
    """The labelled training set at ``spec``: an image folder or an ``.npz``; DataError naming what is wrong."""
    path = Path(spec.removeprefix("npz:"))
    if path.is_dir():
        data = load_image_folder(path, folder_shape(path)).split
    elif path.is_file() and path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            keys = ("x_train", "y_train") if "x_train" in f else ("x", "y")
            if not all(k in f for k in keys):
                raise DataError(f"{path}: expected arrays x and y (or x_train and y_train), found {sorted(f.files)}")
            x, y = f[keys[0]], f[keys[1]]
        if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[3] not in (1, 3, 4):
            x = x.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        scale = 255.0 if x.dtype == np.uint8 or float(x.max(initial=0)) > 1.0 else 1.0
        data = Split(to_nchw_float(x, scale, str(path)), to_labels(y, str(path)))
    else:
        raise DataError(f"{spec}: not an image folder or an .npz file")
    if len(data) == 0 or bool((data.y < 0).any()):
        raise DataError(f"{spec}: scan-data needs labelled samples (the labels are what poisoning changes)")
    return data


@dataclass
class DataScan:
    """A scan's result: the detection, the data, and what was used."""

    scores: torch.Tensor
    flagged: torch.Tensor
    suspicious_classes: tuple[int, ...]
    has_test: bool
    detector: str
    summary: dict


def scan_data(
    data: str,
    *,
    model: str | None = None,
    clean: str | None = None,
    detector: str = "scan",
    architecture: str = "badnet_cnn",
    seed: int = 0,
    device: str = "auto",
) -> tuple[DataScan, Split]:
    """Scan the training set at ``data``; see the module docstring."""
    train = read_training_data(data)
    method = DEFENSES.build(detector, {})
    if getattr(method, "kind", None) != "data_detector":
        raise DataError(f"{detector} is not a data detector; use scan, spectral_signatures, spectre, ...")
    shape = tuple(train.x.shape[1:])
    if model is not None:
        net = load_model_file(model, data_shape=shape).model
    else:
        mean, std = channel_stats(train.x)
        ds = Dataset(
            Path(data).stem,
            train,
            train.head(0),
            train.head(0),
            tuple(map(str, range(int(train.y.max()) + 1))),
            mean,
            std,
        )
        net = train_new_model(architecture, ds, TrainingConfig(), seed=seed, device=device, progress=False)
    reference = read_training_data(clean) if clean is not None else train
    found = method.fit(net, train, reference, seed=seed, device=device).detection_
    summary = {
        "data": data,
        "samples": len(train),
        "detector": detector,
        "model": model or f"trained here ({architecture})",
        "clean_data": clean or "the scanned data itself",
        "flagged": int(found.flagged.sum()),
        "suspicious_classes": list(found.suspicious_classes),
        "poison_found": bool(found.suspicious_classes) if method.has_dataset_test else None,
        "test": "SCAn class test at threshold e (false alarm 0.33% per clean class under a normal null; measured "
        "on clean sets, docs/data-detectors.md: 0 of 10 MNIST-5k scans, 2 of 10 scans of the 8x8 digits)"
        if method.has_dataset_test
        else "none: this detector removes a fixed share and makes no dataset-level decision",
        "class_statistics": {k: np.nan_to_num(v).round(4).tolist() for k, v in found.class_statistics.items()},
    }
    result = DataScan(found.scores, found.flagged, found.suspicious_classes, method.has_dataset_test, detector, summary)
    return result, train


def _png(img: torch.Tensor) -> str:
    from PIL import Image

    arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    pic = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).resize((64, 64), Image.NEAREST)
    buf = io.BytesIO()
    pic.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_data_scan(result: DataScan, train: Split, output: Path, top: int = 40) -> list[Path]:
    """``suspected.csv``, ``summary.json`` and ``page.html`` under ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    flagged = result.flagged.nonzero().flatten()
    order = flagged[torch.argsort(result.scores[flagged], descending=True, stable=True)]
    rows = ["index,label,score"] + [f"{int(i)},{int(train.y[i])},{float(result.scores[i]):.6g}" for i in order]
    paths = [output / "suspected.csv", output / "summary.json", output / "page.html"]
    write_atomic(paths[0], "\n".join(rows) + "\n")
    write_atomic(paths[1], json.dumps(result.summary, indent=2))
    ranked = torch.argsort(result.scores, descending=True, stable=True)[:top]
    cells = "".join(
        f'<figure><img src="data:image/png;base64,{_png(train.x[i])}"><figcaption>#{int(i)} label {int(train.y[i])}'
        f"</figcaption></figure>"
        for i in ranked
    )
    verdict = {True: "poison found", False: "no poison found", None: "no dataset-level test"}[
        result.summary["poison_found"]
    ]
    page = (
        f"<!doctype html><meta charset=utf-8><title>scan-data</title><h1>scan-data: {verdict}</h1>"
        f"<p>{result.summary['flagged']} of {result.summary['samples']} samples flagged by {result.detector}; "
        f"suspicious classes {result.summary['suspicious_classes']}.</p><h2>Most suspicious samples</h2>"
        f'<div style="display:flex;flex-wrap:wrap">{cells}</div>'
    )
    write_atomic(paths[2], page)
    return paths
