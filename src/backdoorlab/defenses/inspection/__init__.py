"""Model inspection: decide per model whether it is backdoored (Neural Cleanse, DeepInspect)."""
