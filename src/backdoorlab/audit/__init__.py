"""The audit: a model file from someone else plus a few clean samples in, a verdict out (`backdoorlab scan`)."""
