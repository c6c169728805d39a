"""Keras Applications rebuilt from fluxnet layers, with Keras' layer names so Keras weights files load."""
from fluxnet.applications import resnet50
from fluxnet.applications.resnet50 import ResNet50

__all__ = ["ResNet50", "resnet50"]
