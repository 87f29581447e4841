"""Models: architectures by name (normalization inside), training, inference, checkpoints."""

from .architectures import MODELS, Normalize, build_model, count_parameters
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .recipe import train_new_model
from .training import BatchHook, TrainingConfig, predict, predict_logits, train_model

__all__ = [
    "BatchHook",
    "MODELS",
    "Normalize",
    "TrainingConfig",
    "build_model",
    "count_parameters",
    "load_checkpoint",
    "predict",
    "predict_logits",
    "read_checkpoint",
    "save_checkpoint",
    "train_model",
    "train_new_model",
]

# Architectures of the application domains (issue 10) and the Trojan Detection Challenge's MNIST network (issue 22);
# importing them registers them in MODELS.
from . import faces, speech, tdc_cnn  # noqa: E402,F401
