"""Repairs: take a model and clean data, return a new model (pruning, fine-tuning, fine-pruning, unlearning)."""
