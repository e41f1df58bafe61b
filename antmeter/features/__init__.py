"""Features and labels: causal indicators, the feature pipeline, future-aware direction labels."""
