"""Transfer learning: heads on pretrained backbones (``heads``), the backbone zoo (``pretrained``),
Keras 3 weight files (``keras_weights``) and Keras 3 ``.keras`` archives (``keras_file``).

    backbone, variables = fx.pretrained.load("digits04")
    model = fx.transfer.build_transfer_model(backbone, num_classes=5)
    groups = fx.transfer.configure(model, backbone, "fine_tune")      # Trainer(param_groups=groups)
    init = fx.pretrained.restore_into(model.init(key), variables, exclude=["params/head_*"])
"""
from fluxnet.transfer import keras_file, keras_weights, pretrained
from fluxnet.transfer.heads import HEAD_PREFIX, MODES, backbone_layers, build_transfer_model, configure
from fluxnet.transfer.keras_file import load_keras_model, save_keras_model, save_keras_weights
from fluxnet.transfer.keras_weights import load_keras_weights

__all__ = ["HEAD_PREFIX", "MODES", "backbone_layers", "build_transfer_model", "configure", "keras_file",
           "keras_weights", "load_keras_model", "load_keras_weights", "pretrained", "save_keras_model",
           "save_keras_weights"]
