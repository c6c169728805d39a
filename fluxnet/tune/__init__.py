"""Experiments over many runs (sweeps, hyperparameter search, cross-validation); it builds on
``fluxnet.runs`` only, and the library never imports it."""
