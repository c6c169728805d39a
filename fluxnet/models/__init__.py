"""Models: Functional (``Model``) and ``Sequential``, their summary, config round-trip, and builders by
name for run configs (``builders``)."""
from fluxnet.models.functional import Model
from fluxnet.models.sequential import Sequential
from fluxnet.models.serialization import model_from_config

__all__ = ["Model", "Sequential", "model_from_config"]
