"""fluxnet layers: Keras 3 names, arguments and numerics, as pure init/apply functions."""
from fluxnet.layers.base import Layer, LayerError, SymbolicTensor, register
from fluxnet.layers.conv import Conv2D, DepthwiseConv2D, SeparableConv2D
from fluxnet.layers.convnext_blocks import LayerScale, StochasticDepth
from fluxnet.layers.core import Activation, Dense, Dropout, Input, InputLayer, ReLU
from fluxnet.layers.lambda_layer import Lambda
from fluxnet.layers.merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from fluxnet.layers.normalization import BatchNormalization, LayerNormalization, Normalization
from fluxnet.layers.pooling import AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D
from fluxnet.layers.reshaping import Cropping2D, Flatten, Rescaling, Reshape, ZeroPadding2D

__all__ = [
    "Layer", "LayerError", "SymbolicTensor", "register", "Input", "InputLayer", "Dense", "Activation", "ReLU",
    "Dropout", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "BatchNormalization", "LayerNormalization", "Normalization",
    "Flatten", "Reshape", "ZeroPadding2D", "Cropping2D", "Rescaling", "Add", "Subtract", "Multiply", "Average",
    "Maximum", "Minimum", "Concatenate", "Lambda", "LayerScale", "StochasticDepth",
]
