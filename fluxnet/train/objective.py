"""What a model is trained on: a loss per output, their weights, and metrics per output (Keras 3's
``compile_utils``), as pure functions of targets and predictions.

Outputs are named as Keras names them: the keys of a dict of outputs, else each output layer's name.
``loss`` is one loss (every output gets it), a list (one per output) or a dict keyed by output name;
``loss_weights`` a list or dict (default 1 each; Keras refuses weights with a single loss, fluxnet
weighs the broadcast loss per output); ``metrics`` a list (a single-output model), a list with one entry
(a metric or a list of them) per output, or a dict keyed by output name. Logs use Keras' names: ``loss``
(the weighted total) and, for several outputs, ``<output>_loss`` and ``<output>_<metric>``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fluxnet import losses as losses_lib
from fluxnet import metrics as metrics_lib
from fluxnet.errors import ArgumentError, ArgumentTypeError, DataError

Metrics = dict


def output_names(model) -> list[str]:
    """The model's output names, in the order of ``model.outputs``."""
    if isinstance(model.output, Mapping):
        return list(model.output)
    return [t.layer.name for t in model.outputs]


def input_names(model) -> list[str]:
    """The model's input names (dict keys, else the Input layers' names), in ``model.inputs`` order."""
    if isinstance(model.input, Mapping):
        return list(model.input)
    return [t.layer.name for t in model.inputs]


def per_output(spec: Any, names: Sequence[str], what: str) -> list:
    """``spec`` given once, as a list or as a dict keyed by output name, as one entry per output."""
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(names))
        if unknown:
            raise ArgumentError(f"{what} names outputs the model does not have: {unknown}; its outputs are "
                                f"{list(names)}.")
        return [spec.get(name) for name in names]
    if isinstance(spec, (list, tuple)):
        if len(spec) != len(names):
            raise ArgumentError(f"{what} is a list of {len(spec)} entries, but the model has {len(names)} "
                                f"outputs {list(names)}: give one per output, or a dict keyed by output name.")
        return list(spec)
    return [spec] * len(names)


def structured(data: Any, names: Sequence[str], what: str, keyed: bool) -> Any:
    """Arrays for several inputs or outputs, given as a list in order or a dict keyed by name, in the
    order of ``names``: a dict when ``keyed`` (the model's own structure is a dict), else a list."""
    if isinstance(data, Mapping):
        missing, extra = [n for n in names if n not in data], sorted(set(data) - set(names))
        if missing or extra:
            raise DataError(f"The {what} dict does not match the model's {list(names)}: "
                            + "; ".join(([f"missing {missing}"] if missing else [])
                                        + ([f"unexpected {extra}"] if extra else [])) + ".")
        values = [np.asarray(data[n]) for n in names]
        if len(names) == 1 and not keyed:
            return values[0]
    elif isinstance(data, (list, tuple)) and len(names) > 1:
        if len(data) != len(names):
            raise DataError(f"The {what} is a list of {len(data)} arrays, but the model has {len(names)}: "
                            f"{list(names)}.")
        values = [np.asarray(v) for v in data]
    elif len(names) > 1:
        raise DataError(f"The model has {len(names)} {what.split()[-1]}s {list(names)}: pass a list or a dict of "
                        f"arrays, got {type(data).__name__}.")
    else:
        return np.asarray(data[0] if isinstance(data, (list, tuple)) and len(data) == 1 else data)
    return dict(zip(names, values)) if keyed else values


class Objective:
    """Losses, loss weights and metrics over a model's outputs (see the module docstring)."""

    def __init__(self, model, loss: Any = "sparse_categorical_crossentropy", metrics: Any = (),
                 loss_weights: Any = None):
        self.names = output_names(model)
        self.keyed = isinstance(model.output, Mapping)
        self.multi = len(self.names) > 1
        specs = per_output(loss, self.names, "loss")
        if any(s is None for s in specs):
            missing = [n for n, s in zip(self.names, specs) if s is None]
            raise ArgumentError(f"loss gives no loss for the outputs {missing}.")
        self.loss_names = [losses_lib.name_of(s) for s in specs]
        self.loss_fns = [losses_lib.get(s) for s in specs]
        self.loss_weights = None
        if loss_weights is not None:
            weights = per_output(loss_weights, self.names, "loss_weights")
            self.loss_weights = [1.0 if w is None else _weight(w, n) for n, w in zip(self.names, weights)]
        self.metric_fns = [{metrics_lib.name_of(m): metrics_lib.get(m) for m in _as_list(spec)}
                           for spec in self._metric_specs(metrics)]

    def _metric_specs(self, metrics: Any) -> list:
        if not self.multi:
            return [metrics]
        if isinstance(metrics, (list, tuple)) and not metrics:
            return [()] * len(self.names)
        if isinstance(metrics, (str, Callable)) and not isinstance(metrics, (list, tuple, Mapping)):
            return [metrics] * len(self.names)
        return per_output(metrics, self.names, "metrics")

    # ------------------------------------------------------------------------- host side
    def targets(self, y: Any) -> Any:
        """Targets as the steps take them: an array for one output, a list in output order for several."""
        return structured(y, self.names, "targets", keyed=False)

    def flat(self, values: Any) -> list:
        """One entry per output from the model's outputs or ``targets``' structure."""
        if not self.multi:
            return [values]
        return [values[n] for n in self.names] if isinstance(values, Mapping) else list(values)

    def log_names(self) -> list[str]:
        """Every logged name, in Keras' order: loss, then per output its loss and metrics."""
        if not self.multi:
            return ["loss", *self.metric_fns[0]]
        return ["loss", *[key for name, fns in zip(self.names, self.metric_fns)
                          for key in (f"{name}_loss", *(f"{name}_{m}" for m in fns))]]

    def evaluate_order(self) -> list[str]:
        """Keras' ``evaluate`` list: the loss, each output's loss, then the metrics."""
        if not self.multi:
            return self.log_names()
        metric_keys = [f"{name}_{m}" for name, fns in zip(self.names, self.metric_fns) for m in fns]
        return ["loss", *(f"{name}_loss" for name in self.names), *metric_keys]

    # ------------------------------------------------------------------------- traced
    def loss(self, y: Any, preds: Any, weight: jax.Array | None = None, mask: jax.Array | None = None,
             loss_fns: Sequence[Callable] | None = None) -> tuple[jax.Array, list[jax.Array]]:
        """``(total, per-output losses)``: each output's loss reduced as Keras does (sample weights,
        real rows), the total their weighted sum. ``loss_fns`` replaces the losses (MixUp's dense ones)."""
        preds = in_float32(preds)  # under a mixed dtype policy the outputs come in bfloat16/float16
        parts = [losses_lib.compute_loss(fn, t, p, sample_weight=weight, mask=mask)
                 for fn, t, p in zip(loss_fns or self.loss_fns, self.flat(y), self.flat(preds))]
        if self.loss_weights is None:
            total = parts[0] if len(parts) == 1 else sum(parts[1:], parts[0])
        else:
            total = sum((w * p for w, p in zip(self.loss_weights, parts)), jnp.zeros((), parts[0].dtype))
        return total, parts

    def sums(self, total: jax.Array, parts: list, y: Any, preds: Any, mask: jax.Array | None,
             weight: jax.Array | None) -> Metrics:
        """Sums that average, over an epoch, to Keras' logged loss and metrics: the losses weighted by
        real rows (Keras' loss trackers weight each batch by its size), metrics by ``mask * weight``."""
        preds = in_float32(preds)
        first = jax.tree.leaves(preds)[0]
        real = jnp.ones(first.shape[:1], jnp.float32) if mask is None else mask.astype(jnp.float32)
        count = jnp.sum(real)
        out = {"loss": (total * count, count)}
        w = real if weight is None else real * weight
        for name, part, t, p, fns in zip(self.names, parts, self.flat(y), self.flat(preds), self.metric_fns):
            prefix = f"{name}_" if self.multi else ""
            if self.multi:
                out[f"{prefix}loss"] = (part * count, count)
            for metric, fn in fns.items():
                values = fn(t, p)
                out[prefix + metric] = (jnp.sum(jnp.where(w > 0, values * w, 0.0)), jnp.sum(w))
        return out


def _as_list(spec: Any) -> list:
    if spec is None:
        return []
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def _weight(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
        raise ArgumentTypeError(f"loss_weights for output {name!r} must be a finite number, got {value!r}.")
    return float(value)


def in_float32(preds: Any) -> Any:
    """Float outputs narrower than float32 (a mixed dtype policy's) as float32, for losses and metrics."""
    return jax.tree.map(lambda p: p.astype(jnp.float32) if jnp.issubdtype(p.dtype, jnp.floating)
                        and jnp.finfo(p.dtype).bits < 32 else p, preds)
