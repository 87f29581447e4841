"""backdoorlab: attack, detect and remove backdoors in deep neural networks (PyTorch)."""

__version__ = "0.1.0"
