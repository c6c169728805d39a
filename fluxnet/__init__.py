"""fluxnet: Keras' ease with JAX's speed and reproducibility."""
from fluxnet import activations, initializers, layers
from fluxnet.models import Model, Sequential, model_from_config

__version__ = "0.1.0"
__all__ = ["Model", "Sequential", "model_from_config", "layers", "activations", "initializers"]
