"""Input detectors: screen one input at a time at run time (STRIP, Feature Squeezing)."""
