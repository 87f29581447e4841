"""The CUDA path end to end, as one script for a lent GPU machine (issues 23 and 24). Not a ``bench_*`` module:
``make bench`` does not run it; run ``python -m benchmarks.cuda_check OUT [--npz cifar10_png5k.npz]``.

It runs, each as its own process with a time limit, and writes one log per job plus ``summary.json`` and
``reports.tar.gz`` (the run folders and ``results.sqlite``, without the model cache) into ``OUT``:

1. ``bench_trainer`` alone (the trainer against the reference loop: throughput needs the card to itself);
2. then side by side on the one card (their wall times are therefore upper bounds):
   - ``default``: ``backdoorlab run --device cuda``, the built-in MNIST-5k default;
   - ``scan``: one BadNets model written as checkpoint, state dict, safetensors, TorchScript, ONNX and
     ``torch.export`` files, each scanned with ``backdoorlab scan --device cuda`` (both default inspectors);
   - ``leaderboard`` (with ``--npz``): the leaderboard setting on the CIFAR-10 slice (``cifar10_png5k``, 3,600
     training images): ``preact_resnet18``, BackdoorBench's schedule (SGD 0.01, momentum 0.9, wd 5e-4, cosine,
     batch 128, crop pad 4 + flip, ``--epochs``), BadNets 10% target 0 against the repairs of ``--defenses``.

A job past its limit is stopped and reported as such; whatever it stored is still in the archive.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch
import yaml

FORMATS = {  # file name -> extra scan arguments (weights-only files need the architecture)
    "model.pt": [],
    "model.ts": [],
    "model.onnx": [],
    "model.pt2": [],
    "model.safetensors": ["--arch", "badnet_cnn", "--input-shape", "1,28,28", "--num-classes", "10"],
    "model.pth": ["--arch", "badnet_cnn", "--input-shape", "1,28,28", "--num-classes", "10"],
}
DEVICE = ["cuda"]  # --device: cpu only to try the script itself here
REPAIRS = "nc_unlearning,anp,i_bau,fine_tuning,nad,clp,fst,fine_pruning"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "backdoorlab", *args]


def start(cmd: list[str], log: Path) -> tuple[subprocess.Popen, float]:
    handle = log.open("w")
    handle.write("$ " + " ".join(cmd) + "\n")
    handle.flush()
    env = {**os.environ, "OMP_NUM_THREADS": "2"}  # several jobs share the machine's cores
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env), time.perf_counter()


def finish(proc: subprocess.Popen, began: float, limit: float) -> dict:
    try:
        rc = proc.wait(timeout=max(1.0, limit - (time.perf_counter() - began)))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = "timed out"
    return {"rc": rc, "seconds": round(time.perf_counter() - began, 1)}


def write_formats(checkpoint: Path, folder: Path) -> None:
    """The checkpoint re-written in every format a third party might use."""
    from safetensors.torch import save_file

    from backdoorlab.models.loading import load_model_file

    model = load_model_file(checkpoint).model.cpu().eval()
    x = torch.rand(2, 1, 28, 28)
    torch.save(model.state_dict(), folder / "model.pth")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    torch.jit.save(torch.jit.trace(model, x[:1]), folder / "model.ts")
    torch.onnx.export(
        model, x[:1], folder / "model.onnx", input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False
    )
    program = torch.export.export(model, (x,), dynamic_shapes=[{0: torch.export.Dim("n", min=1)}])
    torch.export.save(program, folder / "model.pt2")


def scan_formats(folder: Path, limit: float) -> dict:
    """Train one BadNets model on CUDA, write it in every format, scan each file on CUDA (in parallel)."""
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    log = folder / "attack.log"
    proc, t0 = start(
        cli("attack", "badnets", "--device", DEVICE[0], "--epochs", "10", "-o", str(folder / "model.pt")), log
    )
    result: dict = {"attack": finish(proc, t0, limit / 3)}
    if result["attack"]["rc"] != 0:
        return result
    write_formats(folder / "model.pt", folder)
    jobs = {}
    for name, extra in FORMATS.items():
        out = folder / name.replace(".", "_")
        cmd = cli("scan", str(folder / name), "--data", "mnist5k", "--device", DEVICE[0], "-o", str(out), *extra)
        jobs[name] = (*start(cmd, folder / f"scan_{name}.log"), out)
    for name, (p, t, out) in jobs.items():
        res = finish(p, t, limit - (time.perf_counter() - began))
        verdict = out / "scan.json"
        if verdict.exists():
            report = json.loads(verdict.read_text())
            res.update({k: report.get(k) for k in ("format", "backdoor_found", "clean_samples", "input_shape")})
        res["log_tail"] = (folder / f"scan_{name}.log").read_text()[-600:]
        result[name] = res
    return result


def leaderboard_config(npz: Path, epochs: int, defenses: list[str], path: Path) -> Path:
    config = {
        "name": "leaderboard-slice-cifar10",
        "dataset": f"npz:{npz}",
        "model": "preact_resnet18",
        "training": {
            "optimizer": "sgd",
            "lr": 0.01,
            "momentum": 0.9,
            "weight_decay": 0.0005,
            "epochs": epochs,
            "batch_size": 128,
            "schedule": "cosine",
            "augment_shift": 4,
            "augment_flip": True,
        },
        "attacks": [{"name": "badnets", "poison_rate": 0.1, "target": 0}],
        "defenses": defenses,
        "seeds": [0],
        "device": DEVICE[0],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--npz", type=Path, help="cifar10_png5k.npz for the leaderboard slice")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--defenses", default=REPAIRS)
    parser.add_argument("--trainer-limit", type=float, default=120)
    parser.add_argument("--limit", type=float, default=330, help="seconds for the side-by-side jobs")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    DEVICE[0] = args.device
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    runs = Path("runs-cuda-check")
    summary: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        summary["card"] = torch.cuda.get_device_name(0)

    proc, t0 = start([sys.executable, "-m", "benchmarks", "bench_trainer"], out / "trainer.log")
    summary["trainer"] = finish(proc, t0, args.trainer_limit)

    side = {
        "default": start(
            cli("run", "--device", DEVICE[0], "-o", str(runs), "--run-name", "default", "-q"), out / "default.log"
        )
    }
    if args.npz:
        config = leaderboard_config(args.npz, args.epochs, args.defenses.split(","), out / "leaderboard.yaml")
        cmd = cli("run", str(config), "-o", str(runs), "--run-name", "leaderboard", "-q")
        side["leaderboard"] = start(cmd, out / "leaderboard.log")
    summary["scan"] = scan_formats(runs / "scan", args.limit - 10)
    for name, (p, t) in side.items():
        summary[name] = finish(p, t, args.limit)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    with tarfile.open(out / "reports.tar.gz", "w:gz") as tar:
        for path in runs.iterdir():
            if path.name not in ("cache",):
                tar.add(path, arcname=path.name, filter=lambda i: None if "/cache" in i.name else i)
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
