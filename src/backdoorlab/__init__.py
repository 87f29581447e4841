"""backdoorlab: attack, detect and remove backdoors in deep neural networks (PyTorch)."""

__version__ = "0.1.0"


def guard(model, detector, mode="abstain"):
    """Wrap ``model`` with a calibrated input detector; see :class:`backdoorlab.defenses.guard.GuardedModel`."""
    from .defenses.guard import guard as _guard

    return _guard(model, detector, mode)
