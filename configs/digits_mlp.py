"""Experiments on the bundled digits: a small MLP that trains in seconds, and the space to search.

    fluxnet sweep configs/digits_mlp.py --method random --trials 6
    fluxnet tune configs/digits_mlp.py --trials 16           # Optuna: TPE + median pruning
    fluxnet cv configs/digits_mlp.py --folds 5
"""
from pathlib import Path

from ml_collections import ConfigDict

from fluxnet.runs.config import load_config


def get_config() -> ConfigDict:
    config = load_config(Path(__file__).with_name("digits_cnn.py"))
    config.model.name = "mlp"
    config.optimizer.schedule = "constant"
    config.train.epochs = 8
    config.train.early_stopping.patience = 0
    return config


def get_sweep() -> dict:
    return {"optimizer.learning_rate": {"loguniform": [1e-4, 3e-2]},
            "model.mlp.dropout": [0.0, 0.2, 0.4],
            "train.batch_size": [32, 64]}
