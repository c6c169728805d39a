"""Experiments around training: baselines (and, as they land, sweeps, search, cross-validation)."""
