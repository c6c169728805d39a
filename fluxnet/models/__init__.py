"""Models: Functional (``Model``) and ``Sequential``, their summary and config round-trip."""
from fluxnet.models.functional import Model
from fluxnet.models.sequential import Sequential

__all__ = ["Model", "Sequential", "model_from_config"]


def model_from_config(config: dict) -> Model:
    """Rebuild a Sequential or Functional model from ``model.get_config()``."""
    return Model.from_config(config)
