"""The one training recipe every model of the toolkit comes from: a new network, trained on a split of a dataset.

Clean models (the grid's, the population's, the host of a model-level attack) and poisoned ones (every poisoning
attack) are made here, so one setting and seed give one network wherever it is asked for.
"""

from __future__ import annotations

from torch import nn

from ..data import Dataset, Split
from .architectures import build_model
from .training import BatchHook, TrainingConfig, train_model


def train_new_model(
    architecture: str,
    dataset: Dataset,
    training: TrainingConfig,
    *,
    split: Split | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool | None = None,
    description: str = "training",
    batch_hook: BatchHook | None = None,
) -> nn.Sequential:
    """A new ``architecture`` network for ``dataset`` (weights seeded by ``seed``, the dataset's normalization as
    its first layer) trained on ``split`` (default: the clean ``dataset.train``), each batch passed through
    ``batch_hook`` when given (per-batch poisoning). Returned on the CPU, eval mode."""
    model = build_model(architecture, dataset.input_shape, dataset.num_classes, dataset.mean, dataset.std, seed=seed)
    split = dataset.train if split is None else split
    train_model(
        model,
        split.x,
        split.y,
        training,
        seed=seed,
        device=device,
        progress=progress,
        description=description,
        batch_hook=batch_hook,
    )
    return model
