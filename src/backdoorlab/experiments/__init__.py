"""Experiments: config schema, model cache, results store, and the runner behind `backdoorlab run`."""
