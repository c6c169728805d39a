"""Source task for transfer learning: the digits CNN on digits 0-4, exported as a backbone.

    fluxnet pretrain configs/digits_pretrain.py [key=value ...] [--workdir DIR]

The layers up to ``pretrain.cut`` become zoo entry ``pretrain.name`` (and ``WORKDIR/backbone``).
"""
from pathlib import Path

from ml_collections import ConfigDict

from fluxnet.runs.config import load_config


def get_config() -> ConfigDict:
    config = load_config(Path(__file__).with_name("digits_cnn.py"))
    config.data.classes = (0, 1, 2, 3, 4)
    config.train.epochs = 40           # 585 images: enough steps for BatchNormalization's moving statistics
    config.pretrain = ConfigDict({
        "cut": "pool2",                   # the last backbone layer (its output feeds the new head)
        "name": "digits04",               # zoo entry; None: only WORKDIR/backbone
        "zoo": None,                      # zoo folder; None: $FLUXNET_ZOO or ~/.cache/fluxnet/zoo
        "overwrite": False,               # replace an existing zoo entry of that name
    })
    return config
