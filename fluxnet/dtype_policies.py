"""Mixed precision with Keras' names: a dtype policy is the dtype a layer keeps its variables in and
the dtype it computes in.

=================  =========  =======  =======================================================
policy             variables  compute  notes
=================  =========  =======  =======================================================
float32            float32    float32  the default
mixed_bfloat16     float32    bfloat16 TPUs, recent GPUs: half the activation memory, no loss scale
mixed_float16      float32    float16  older GPUs; the Trainer scales the loss (``loss_scale.py``)
bfloat16           bfloat16   bfloat16 everything, variables and optimizer state too
float16            float16    float16
=================  =========  =======  =======================================================

A layer takes ``dtype="mixed_bfloat16"`` (Keras), a model's ``dtype_policy`` sets every layer's, and a
run config's ``train.dtype_policy`` the model's. A model casts each layer's inputs and float
parameters to the layer's compute dtype; gradients come back in the variables' dtype. Where Keras
leaves it to the user, fluxnet keeps precision: BatchNormalization computes its statistics and its
output in float32 (its variables are never cast), and the losses and metrics take the outputs in
float32. A softmax *inside* a layer (``Dense(10, activation="softmax")``) runs in the compute dtype:
prefer logits and ``from_logits=True`` losses.
"""
from __future__ import annotations

import dataclasses

from fluxnet.errors import ArgumentTypeError
from fluxnet.registry import unknown_name_error

_POLICIES = {"float32": ("float32", "float32"), "mixed_bfloat16": ("float32", "bfloat16"),
             "mixed_float16": ("float32", "float16"), "bfloat16": ("bfloat16", "bfloat16"),
             "float16": ("float16", "float16")}
POLICY_NAMES = tuple(_POLICIES)


@dataclasses.dataclass(frozen=True)
class DTypePolicy:
    """``DTypePolicy("mixed_bfloat16")``: ``variable_dtype`` and ``compute_dtype`` (Keras' names)."""

    name: str = "float32"

    def __post_init__(self):
        if self.name not in _POLICIES:
            raise unknown_name_error("dtype policy", self.name, POLICY_NAMES)

    @property
    def variable_dtype(self) -> str:
        return _POLICIES[self.name][0]

    @property
    def compute_dtype(self) -> str:
        return _POLICIES[self.name][1]

    @property
    def needs_loss_scale(self) -> bool:
        """float16 gradients underflow without a loss scale (Keras wraps the optimizer for this policy)."""
        return self.compute_dtype == "float16"


def get(policy: "str | DTypePolicy | None") -> DTypePolicy:
    """A policy from its name (None: float32) or itself."""
    if policy is None:
        return DTypePolicy()
    if isinstance(policy, DTypePolicy):
        return policy
    if isinstance(policy, str):
        return DTypePolicy(policy)
    raise ArgumentTypeError(f"A dtype policy is a name ({', '.join(POLICY_NAMES)}) or a DTypePolicy, got "
                            f"{type(policy).__name__}.")
