"""Experiments over many runs: sweeps, hyperparameter search (Optuna) and cross-validation. Built on
``fluxnet.runs``; the library never imports it.

    from fluxnet import runs, tune
    config = runs.resolve_config("configs/digits_cnn.py", ["model.name=mlp", "train.epochs=3"])
    space = tune.space.parse({"optimizer.learning_rate": [1e-3, 3e-3], "model.mlp.dropout": [0.0, 0.2]})
    best = tune.sweep(config, "runs/demo-sweep", space)                 # a grid; best.json's content
    best = tune.search(config, "runs/demo-tune", space, trials=8)       # TPE + median pruning
    cv = tune.cross_validate(config, "runs/demo-cv", folds=5)           # cv.json's content
"""
from fluxnet.tune import space
from fluxnet.tune.experiments import search, sweep
from fluxnet.tune.folds import cross_validate

__all__ = ["cross_validate", "search", "space", "sweep"]
