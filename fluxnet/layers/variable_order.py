"""Each layer class' variables in Keras' order (``layer.weights``: creation order), for Keras' weights
files and ``model.get_weights()``. Register a custom layer's order here by its class name."""
from __future__ import annotations

from fluxnet.registry import Registry

VARIABLE_ORDERS: Registry[tuple[str, ...]] = Registry("layer class with a known Keras variable order")
"""Layer class name -> its variable names in Keras' order."""
VARIABLE_ORDERS.register("Conv2D", ("kernel", "bias"))
VARIABLE_ORDERS.register("Dense", ("kernel", "bias"))
VARIABLE_ORDERS.register("BatchNormalization", ("gamma", "beta", "moving_mean", "moving_variance"))
