"""Transfer learning: heads on pretrained backbones (``heads``), the backbone zoo (``pretrained``) and
Keras 3 weight files (``keras_weights``).

    backbone, variables = fx.pretrained.load("digits04")
    model = fx.transfer.build_transfer_model(backbone, num_classes=5)
    groups = fx.transfer.configure(model, backbone, "fine_tune")      # Trainer(param_groups=groups)
    init = fx.pretrained.restore_into(model.init(key), variables, exclude=["params/head_*"])
"""
from fluxnet.transfer import keras_weights, pretrained
from fluxnet.transfer.heads import HEAD_PREFIX, MODES, backbone_layers, build_transfer_model, configure
from fluxnet.transfer.keras_weights import load_keras_weights

__all__ = ["HEAD_PREFIX", "MODES", "backbone_layers", "build_transfer_model", "configure", "keras_weights",
           "load_keras_weights", "pretrained"]
