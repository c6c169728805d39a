"""Keras Applications rebuilt from fluxnet layers, with Keras' layer names so Keras weights files load.

``common`` is Keras' ``imagenet_utils`` (input shapes, argument checks, ``preprocess_input``), each
network has its module (``resnet50``, ``vgg16``, ``densenet``, ``mobilenet_v2``, ``xception``,
``efficientnet``, ``convnext``), ``catalog`` registers them with Keras' ImageNet figures and
``comparison`` measures them on this machine (``fluxnet applications``).
"""
from fluxnet.applications import (catalog, common, comparison, convnext, densenet, efficientnet, mobilenet_v2,
                                  resnet50, vgg16, xception)
from fluxnet.applications.catalog import APPLICATIONS, Application
from fluxnet.applications.comparison import Row, format_table, measure, plot_table, table
from fluxnet.applications.convnext import ConvNeXt, ConvNeXtTiny
from fluxnet.applications.densenet import DenseNet, DenseNet121
from fluxnet.applications.efficientnet import (EfficientNet, EfficientNetB0, EfficientNetB1, EfficientNetB2,
                                               EfficientNetB3, EfficientNetB4, EfficientNetB5, EfficientNetB6,
                                               EfficientNetB7)
from fluxnet.applications.mobilenet_v2 import MobileNetV2
from fluxnet.applications.resnet50 import ResNet50
from fluxnet.applications.vgg16 import VGG16
from fluxnet.applications.xception import Xception

__all__ = ["APPLICATIONS", "Application", "ConvNeXt", "ConvNeXtTiny", "DenseNet", "DenseNet121", "EfficientNet",
           "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4", "EfficientNetB5",
           "EfficientNetB6", "EfficientNetB7", "MobileNetV2", "ResNet50", "Row", "VGG16", "Xception", "catalog",
           "common", "comparison", "convnext", "densenet", "efficientnet", "format_table", "measure", "mobilenet_v2",
           "plot_table", "resnet50", "table", "vgg16", "xception"]
