"""Speed and quality targets of the issues, run by `make bench` (``python -m benchmarks [NAME ...]``)."""
