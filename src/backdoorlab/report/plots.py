"""Figures (matplotlib, Agg backend): clean vs triggered example images with the model's predictions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..utils.files import save_with  # noqa: E402


@dataclass(frozen=True)
class ExampleSet:
    """Examples of one attack: ``clean`` and ``triggered`` (N, C, H, W) in [0, 1] and their predicted labels."""

    label: str
    clean: torch.Tensor
    clean_pred: list[int]
    triggered: torch.Tensor
    triggered_pred: list[int]
    true: list[int]
    targets: list[int]


def _show(ax, image: torch.Tensor) -> None:
    img = image.permute(1, 2, 0).numpy()
    ax.imshow(
        img[..., 0] if img.shape[-1] == 1 else img,
        cmap="gray" if img.shape[-1] == 1 else None,
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def examples_figure(sets: list[ExampleSet], path: Path, class_names: list[str] | None = None) -> None:
    """A grid: per attack, a row of clean images and a row of triggered ones, titled with predictions.

    Titles are green when the prediction is the true label (clean row) or the attacker's target (triggered row).
    """
    n = max(len(s.true) for s in sets)
    fig, axes = plt.subplots(2 * len(sets), n, figsize=(1.35 * n, 3.0 * len(sets)), squeeze=False)
    name = (lambda i: class_names[i]) if class_names else str
    for k, s in enumerate(sets):
        for j in range(n):
            top, bottom = axes[2 * k, j], axes[2 * k + 1, j]
            if j >= len(s.true):
                top.axis("off")
                bottom.axis("off")
                continue
            _show(top, s.clean[j])
            top.set_title(
                f"pred {name(s.clean_pred[j])}", fontsize=8, color="green" if s.clean_pred[j] == s.true[j] else "red"
            )
            _show(bottom, s.triggered[j])
            hit = s.triggered_pred[j] == s.targets[j]
            bottom.set_title(f"pred {name(s.triggered_pred[j])}", fontsize=8, color="crimson" if hit else "gray")
        axes[2 * k, 0].set_ylabel(f"{s.label}\nclean", fontsize=8)
        axes[2 * k + 1, 0].set_ylabel("triggered", fontsize=8)
    fig.suptitle("Clean vs triggered test images (triggered title in red: the backdoor fired)", fontsize=9)
    fig.tight_layout()
    save_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
