"""``scan.html``: the verdict in one sentence, the anomaly bars, and the reversed triggers as images."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..report.render import STYLE  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _bars(name: str, verdict) -> str:
    k = verdict.num_classes
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * k), 2.6))
    index = verdict.anomaly_index.float()
    below = verdict.below_median
    colours = ["crimson" if i in verdict.suspected else ("#7d8fb3" if bool(below[i]) else "#c9cfdb") for i in range(k)]
    signed = torch.where(below, index.abs(), -index.abs())
    ax.bar(range(k), signed.numpy(), color=colours)
    ax.axhline(verdict.cutoff, color="black", ls="--", lw=1, label=f"cutoff {verdict.cutoff:g}")
    ax.set_xticks(range(k))
    ax.set_xlabel("label")
    ax.set_ylabel("anomaly index (below median +)")
    ax.set_title(f"{name}: {verdict.statistic_name}", fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def _triggers(verdict, labels: list[int]) -> str:
    if verdict.masks is None or verdict.patterns is None or not labels:
        return ""
    fig, axes = plt.subplots(2, len(labels), figsize=(1.6 * len(labels), 3.2), squeeze=False)
    for j, label in enumerate(labels):
        mask, pattern = verdict.masks[label], verdict.patterns[label]
        axes[0, j].imshow(mask[0].numpy(), cmap="magma", vmin=0, vmax=1)
        stamped = (mask * pattern).permute(1, 2, 0).numpy()
        axes[1, j].imshow(stamped[..., 0] if stamped.shape[-1] == 1 else stamped, cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(f"label {label}", fontsize=8)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("mask", fontsize=8)
    axes[1, 0].set_ylabel("mask x pattern", fontsize=8)
    return _png(fig)


def scan_page(result) -> str:
    """The self-contained HTML page of a scan."""
    body = [
        f"<h1>backdoorlab scan: {html.escape(result.model)}</h1>",
        f'<div class="callout"><b>{html.escape(result.sentence())}</b></div>',
        f'<p class="meta">{result.loaded.format} model, input {result.loaded.input_shape}, '
        f"{result.loaded.num_classes} classes; {len(result.clean.split)} clean samples from "
        f"{html.escape(result.clean.source)}; {result.seconds:.0f} s.</p>",
    ]
    for verdict in result.verdicts.values():
        body.append(f"<h2>{html.escape(verdict.method)}</h2>")
        body.append(f'<p class="meta">{html.escape(repr(verdict))}</p>')
        body.append(_bars(verdict.method, verdict))
        shown = verdict.suspected or verdict.ranking[:3]
        body.append(_triggers(verdict, shown[:6]))
    if result.strip_threshold is not None:
        body.append("<h2>STRIP, calibrated for run time</h2>")
        body.append(
            f'<p class="meta">Entropy boundary {result.strip_threshold:.4f} bits (inputs below it are '
            f"rejected); use it with backdoorlab.guard.</p>"
        )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>backdoorlab scan</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
