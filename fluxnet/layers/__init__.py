"""fluxnet layers: Keras 3 names, arguments and numerics, as pure init/apply functions."""
from fluxnet.layers.base import Layer, LayerError, SymbolicTensor, register
from fluxnet.layers.conv import Conv2D
from fluxnet.layers.core import Activation, Dense, Dropout, Input, InputLayer
from fluxnet.layers.lambda_layer import Lambda
from fluxnet.layers.merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from fluxnet.layers.normalization import BatchNormalization
from fluxnet.layers.pooling import AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D
from fluxnet.layers.reshaping import Flatten, Rescaling, Reshape, ZeroPadding2D

__all__ = [
    "Layer", "LayerError", "SymbolicTensor", "register", "Input", "InputLayer", "Dense", "Activation",
    "Dropout", "Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
    "BatchNormalization", "Flatten", "Reshape", "ZeroPadding2D", "Rescaling", "Add", "Subtract", "Multiply",
    "Average", "Maximum", "Minimum", "Concatenate", "Lambda",
]
