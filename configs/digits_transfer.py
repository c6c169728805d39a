"""Target task: digits 5-9 on a backbone pretrained on digits 0-4 (``configs/digits_pretrain.py``).

    fluxnet pretrain configs/digits_pretrain.py          # once: zoo entry "digits04"
    fluxnet transfer configs/digits_transfer.py transfer.mode=fine_tune data.train_per_class=10
"""
from pathlib import Path

from ml_collections import ConfigDict

from fluxnet.runs.config import load_config


def get_config() -> ConfigDict:
    config = load_config(Path(__file__).with_name("digits_cnn.py"))
    del config["model"]                   # the model is the backbone plus a new head
    config.data.classes = (5, 6, 7, 8, 9)
    # Few-shot sized: small batches and enough epochs that 5, 10 and 50 images per class (25, 50, 250
    # images) train 200, 350 and 1,600 steps; at batch 32, 50 images are only 2 steps an epoch.
    config.train.batch_size = 8
    config.train.epochs = 50
    config.train.early_stopping.patience = 0
    config.transfer = ConfigDict({
        "backbone": "digits04",           # a zoo name, a zoo entry folder, a pretrain workdir, or a Keras
                                          # application with its weights: mobilenet_v2:PATH.weights.h5
        "zoo": None,
        "input_size": None,               # an application's input side (None: its smallest, e.g. 32)
        "mode": "linear_probe",           # linear_probe | fine_tune
        "fine_tune_layers": None,         # fine_tune: unfreeze the top N backbone layers with weights (None: all)
        "backbone_lr_factor": 0.1,        # fine_tune: backbone learning rate = factor * optimizer.learning_rate
        "exclude": ("params/head_*",),    # variables not restored from the backbone (the new head)
        "head": {"pooling": "flatten", "dropout": 0.2, "hidden_units": 0},
    })
    return config
