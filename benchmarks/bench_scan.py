"""Audit targets (issue 9): `backdoorlab scan` on exported third-party-style model files.

- 5 clean and 5 BadNets MNIST-5k ``badnet_cnn`` models (BadNets 3x3 white square, 10%, targets 0, 2, 4, 6, 8;
  seeds 0..4; the population of the inspection benchmark, shared through the model cache ``runs/bench-cache``),
  each exported to TorchScript (``torch.jit.trace``) and to ONNX (``torch.onnx.export``), then scanned exactly
  as the CLI does (:func:`scan_model` with its default inspectors, Neural Cleanse and DeepInspect, plus STRIP
  calibration) with 200 clean validation images written as a folder of PNGs (20 per class), the "few clean
  samples" of an auditor. Targets: every backdoored model flagged with its true target first among the suspects,
  at most 1 clean model flagged (per format), each scan <= 180 s.
- A model poisoned and trained by another library: the Adversarial Robustness Toolbox's
  ``PoisoningAttackBackdoor`` with its ``add_pattern_bd`` pattern (4 pixels near the bottom-right corner) on 10%
  of MNIST-5k's training images, target 1, a plain torch CNN of our own here (not a registered architecture)
  trained with ART's ``PyTorchClassifier.fit``, exported to TorchScript: it must be flagged, target 1.

Times are wall seconds of one scan in this process and its CPU seconds (the machine may be shared; the load
average is printed). ``BENCH_K`` sets the population size (default 5).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from backdoorlab.audit.scan import scan_model
from backdoorlab.data import Dataset, load_dataset
from backdoorlab.experiments.cache import ModelCache
from backdoorlab.experiments.population import population_models
from backdoorlab.models import TrainingConfig

from .common import check, print_table

ARCH = "badnet_cnn"
CLEAN_PER_CLASS = 20
ART_TARGET = 1
ART_POISON = 0.1
ART_EPOCHS = 10
SCAN_LIMIT_S = 180.0


def write_png_folder(ds: Dataset, folder: Path, per_class: int) -> Path:
    """The first ``per_class`` val images of each class as 8-bit PNGs, one subfolder per class name."""
    for label, name in enumerate(ds.classes):
        sub = folder / str(name)
        sub.mkdir(parents=True, exist_ok=True)
        picks = (ds.val.y == label).nonzero().flatten()[:per_class]
        for i in picks.tolist():
            pixels = (ds.val.x[i, 0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(sub / f"{i}.png")
    return folder


def export(model: nn.Module, example: torch.Tensor, stem: Path) -> dict[str, Path]:
    """``model`` as TorchScript (``stem.ts``) and ONNX (``stem.onnx``, dynamic batch)."""
    model = model.eval()
    ts, onnx = stem.with_suffix(".ts"), stem.with_suffix(".onnx")
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(model, example), ts)
    torch.onnx.export(model, example, onnx, input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    return {"TorchScript": ts, "ONNX": onnx}


def timed_scan(path: Path, data: Path, **kwargs) -> tuple[object, float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    shape = "1,28,28" if path.suffix == ".ts" else None  # TorchScript files do not record their input shape
    result = scan_model(
        path, str(data), num_classes=10, input_shape=shape, seed=0, device="cpu", progress=False, **kwargs
    )
    return result, time.perf_counter() - start, time.process_time() - cpu


class PlainCNN(nn.Module):
    """A third party's MNIST net (not one of ours): two conv blocks and two dense layers, inputs (N, 1, 28, 28)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def art_poisoned_model(ds: Dataset) -> tuple[nn.Module, float, float]:
    """Poison 10% of the non-target training images with ART, train PlainCNN with ART; (model, CA, ASR)."""
    from art.attacks.poisoning import PoisoningAttackBackdoor
    from art.attacks.poisoning.perturbations import add_pattern_bd
    from art.estimators.classification import PyTorchClassifier

    rng = np.random.default_rng(0)
    x, y = ds.train.x.numpy().copy(), ds.train.y.numpy().copy()
    candidates = np.flatnonzero(y != ART_TARGET)
    chosen = rng.choice(candidates, size=round(ART_POISON * len(y)), replace=False)
    attack = PoisoningAttackBackdoor(lambda imgs: add_pattern_bd(imgs, channels_first=True))
    targets = np.eye(10, dtype=np.float32)[np.full(len(chosen), ART_TARGET)]
    x[chosen], poisoned_labels = attack.poison(x[chosen], y=targets)
    y[chosen] = poisoned_labels.argmax(1)

    torch.manual_seed(0)
    model = PlainCNN()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    classifier = PyTorchClassifier(
        model,
        loss=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    classifier.fit(x, y, batch_size=64, nb_epochs=ART_EPOCHS, verbose=False)
    tx, ty = ds.test.x.numpy(), ds.test.y.numpy()
    ca = float((classifier.predict(tx).argmax(1) == ty).mean())
    keep = ty != ART_TARGET
    triggered = add_pattern_bd(tx[keep], channels_first=True)
    asr = float((classifier.predict(triggered).argmax(1) == ART_TARGET).mean())
    return model.eval(), ca, asr


def main() -> bool:
    torch.manual_seed(0)
    k = int(os.environ.get("BENCH_K", 5))
    ds = load_dataset("mnist5k")
    cache = ModelCache(os.environ.get("BENCH_CACHE", "runs/bench-cache"))
    members = population_models(
        ds, ARCH, TrainingConfig(), {"name": "badnets"}, k=k, cache=cache, device="cpu", progress=False
    )
    rows, per_format = [], {}
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_png_folder(ds, Path(tmp) / "clean", CLEAN_PER_CLASS)
        example = ds.test.x[:1]
        for m in members:
            files = export(m.model, example, Path(tmp) / f"{m.role}-{m.seed}")
            for fmt, path in files.items():
                result, wall, cpu = timed_scan(path, folder)
                times.append(wall)
                right = m.target is not None and result.suspected[:1] == [m.target]
                stats = per_format.setdefault(fmt, {"bd_right": 0, "bd": 0, "clean_flagged": 0, "clean": 0})
                if m.role == "clean":
                    stats["clean"] += 1
                    stats["clean_flagged"] += int(result.infected)
                else:
                    stats["bd"] += 1
                    stats["bd_right"] += int(result.infected and right)
                flagged_by = ",".join(n for n, v in result.verdicts.items() if v.infected) or "–"
                rows.append(
                    [
                        fmt,
                        m.role,
                        m.seed,
                        "–" if m.target is None else m.target,
                        "yes" if result.infected else "no",
                        flagged_by,
                        ",".join(map(str, result.suspected)) or "–",
                        f"{wall:.0f}",
                        f"{cpu:.0f}",
                    ]
                )
                print(
                    f"  {fmt} {m.role} seed {m.seed}: infected={result.infected} suspects={result.suspected} "
                    f"({wall:.0f} s)",
                    flush=True,
                )
        art_model, art_ca, art_asr = art_poisoned_model(ds)
        art_file = Path(tmp) / "art-poisoned.ts"
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(art_model, example), art_file)
        art_result, art_wall, art_cpu = timed_scan(art_file, folder)

    print(
        f"\nScans of exported MNIST-5k models ({CLEAN_PER_CLASS * 10} clean PNGs; load average "
        f"{os.getloadavg()[0]:.1f})\n"
    )
    print_table(["format", "model", "seed", "target", "flagged", "by", "suspected targets", "wall s", "CPU s"], rows)
    print(
        f"\nART PoisoningAttackBackdoor model (PlainCNN, ART fit {ART_EPOCHS} epochs): clean accuracy {art_ca:.4f}, "
        f"ASR {art_asr:.4f}; scan: flagged={art_result.infected}, suspects {art_result.suspected}, "
        f"{art_wall:.0f} s ({art_cpu:.0f} s CPU)"
    )
    for name, v in art_result.verdicts.items():
        print(f"  {name}: {v}")

    checks, ok = [], True
    for fmt, s in per_format.items():
        hit = s["bd_right"] == s["bd"]
        fp = s["clean_flagged"] <= 1
        checks += [
            check(
                f"{fmt}: backdoored flagged with the right target ({s['bd_right']}/{s['bd']})",
                s["bd_right"] / max(s["bd"], 1),
                "all",
                hit,
            ),
            check(f"{fmt}: clean models flagged ({s['clean_flagged']}/{s['clean']})", s["clean_flagged"], "<= 1", fp),
        ]
        ok &= hit and fp
    slowest = max(times)
    art_ok = art_result.infected and art_result.suspected[:1] == [ART_TARGET]
    checks += [
        check("slowest scan (s)", slowest, f"<= {SCAN_LIMIT_S:.0f}", slowest <= SCAN_LIMIT_S),
        check(f"mean scan (s), {len(times)} scans", sum(times) / len(times), "reported", True),
        check("ART-poisoned model flagged, target 1 first", float(art_ok), "yes", art_ok),
    ]
    print()
    print_table(["figure", "measured", "target", "status"], checks)
    return ok and slowest <= SCAN_LIMIT_S and art_ok
