"""The registered applications: name -> builder, preprocessing, input sizes and Keras' ImageNet figures.

Like every fluxnet registry (``fluxnet.registry``), ``APPLICATIONS`` looks entries up by name with
errors listing the valid names; a new network adds one ``register`` line here. ``fx.applications.table``
compares every entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from fluxnet.applications import convnext, densenet, efficientnet, mobilenet_v2, resnet50, vgg16, xception
from fluxnet.models.functional import Model
from fluxnet.registry import Registry


@dataclass(frozen=True)
class Application:
    """One network: how to build and feed it, and what Keras reports for its ImageNet weights.

    ``builder`` takes Keras' application arguments (``builder(input_shape=...)`` is the network with its
    1000-class top); ``min_size`` and ``default_size`` are its smallest and default input sides;
    ``keras_top1`` and ``keras_top5`` are ImageNet validation accuracies in percent, ``keras_params`` the
    parameters in millions (rounded, as Keras lists them) and ``keras_depth`` Keras' depth figure; None
    where Keras lists none ("-").
    """
    builder: Callable[..., Model]
    preprocess_input: Callable[..., Any]
    min_size: int
    default_size: int
    keras_top1: float
    keras_top5: float | None
    keras_params: float
    keras_depth: int | None


APPLICATIONS: Registry[Application] = Registry("application")
register = APPLICATIONS.register
get = APPLICATIONS.get

# Keras' figures: the "Available models" table of https://keras.io/api/applications/. Names: Keras' module
# when it holds one network (vgg16, resnet50, mobilenet_v2, xception), else Keras' model name (densenet121, ...)
register("vgg16", Application(vgg16.VGG16, vgg16.preprocess_input, vgg16.MIN_SIZE, vgg16.DEFAULT_SIZE,
                              keras_top1=71.3, keras_top5=90.1, keras_params=138.4, keras_depth=16))
register("resnet50", Application(resnet50.ResNet50, resnet50.preprocess_input, resnet50.MIN_SIZE,
                                 resnet50.DEFAULT_SIZE, keras_top1=74.9, keras_top5=92.1, keras_params=25.6,
                                 keras_depth=107))
register("densenet121", Application(densenet.DenseNet121, densenet.preprocess_input, densenet.MIN_SIZE,
                                    densenet.DEFAULT_SIZE, keras_top1=75.0, keras_top5=92.3, keras_params=8.1,
                                    keras_depth=242))
register("mobilenet_v2", Application(mobilenet_v2.MobileNetV2, mobilenet_v2.preprocess_input, mobilenet_v2.MIN_SIZE,
                                     mobilenet_v2.DEFAULT_SIZE, keras_top1=71.3, keras_top5=90.1, keras_params=3.5,
                                     keras_depth=105))
register("xception", Application(xception.Xception, xception.preprocess_input, xception.MIN_SIZE, xception.DEFAULT_SIZE,
                                 keras_top1=79.0, keras_top5=94.5, keras_params=22.9, keras_depth=81))
register("efficientnetb0", Application(efficientnet.EfficientNetB0, efficientnet.preprocess_input,
                                       efficientnet.MIN_SIZE, efficientnet.VARIANTS["b0"][2], keras_top1=77.1,
                                       keras_top5=93.3, keras_params=5.3, keras_depth=132))
register("convnext_tiny", Application(convnext.ConvNeXtTiny, convnext.preprocess_input, convnext.MIN_SIZE,
                                      convnext.DEFAULT_SIZE, keras_top1=81.3, keras_top5=None, keras_params=28.6,
                                      keras_depth=None))
