"""Optimizers by name with Keras 3 defaults and formulas, built on optax.

``get("adam")`` returns an ``optax.GradientTransformation`` that performs the same update as
``keras.optimizers.Adam()``: same argument names, same defaults, same placement of epsilon. A
user's own optax transformation passes through :func:`get` unchanged.

Keras 3 defaults (``learning_rate`` and optimizer-specific arguments):

=========  ======  ===========================================================================
name       lr      other arguments (Keras names and defaults)
=========  ======  ===========================================================================
sgd        0.01    momentum=0.0, nesterov=False
momentum   0.01    SGD with momentum=0.9 (not a Keras name)
nesterov   0.01    SGD with momentum=0.9, nesterov=True (not a Keras name)
adam       0.001   beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False; mu_dtype=None (fluxnet's:
                   "bfloat16" stores the first moment in bfloat16, as big_vision's ``mu_dtype``)
adamw      0.001   as adam, weight_decay=0.004
rmsprop    0.001   rho=0.9, momentum=0.0, epsilon=1e-7, centered=False
adagrad    0.001   initial_accumulator_value=0.1, epsilon=1e-7
lion       0.001   beta_1=0.9, beta_2=0.99
=========  ======  ===========================================================================

Every optimizer also takes Keras' ``weight_decay`` (default None, i.e. off; AdamW 0.004) and at most
one of ``clipnorm`` (per-tensor norm), ``clipvalue`` (element-wise) and ``global_clipnorm``.
Names are case-insensitive, so Keras' spellings (``"SGD"``, ``"Adam"``, ``"RMSprop"``) work.

Formulas follow Keras 3 exactly where optax differs:

* Adam/AdamW: ``alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)`` and
  ``update = -alpha * m / (sqrt(v) + epsilon)``; epsilon is therefore added to the *uncorrected*
  ``sqrt(v)`` (optax adds 1e-8 to the bias-corrected one).
* RMSprop: ``lr * g / sqrt(v + epsilon)`` (epsilon inside the root, as Keras 3 computes it); with
  momentum, the learning rate is applied *before* the momentum accumulator, as in Keras.
* SGD with momentum: ``m = momentum * m - lr * g`` (learning rate inside the accumulator, which
  matters when the learning rate follows a schedule).
* Weight decay is decoupled, as Keras' ``weight_decay`` argument: ``w -= lr * weight_decay * w``
  before the optimizer step. Unlike Keras (which decays every variable unless told otherwise) it is
  applied only to leaves with ``ndim >= 2`` -- kernels and embeddings -- and skips biases and
  BatchNormalization scales/offsets (see :func:`weight_decay_mask`).

The learning rate (a float or an optax schedule) is injected with ``optax.inject_hyperparams`` so
that :func:`current_learning_rate` can read it from the optimizer state for logging.

Schedules for configs (:func:`make_schedule`): ``constant``, ``cosine``, ``warmup_cosine``,
``exponential`` (Keras ``ExponentialDecay``) and ``piecewise`` (Keras ``PiecewiseConstantDecay``).

Transfer learning: :func:`partitioned` gives parameter groups their own transformation (e.g. a
smaller learning rate for a backbone), :func:`freeze` gives frozen leaves exactly zero updates.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
from typing import Any, Callable, Mapping, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from fluxnet import tree
from fluxnet.errors import ArgumentError, ArgumentTypeError, ConfigError
from fluxnet.registry import Registry, unknown_name_error

LearningRate = Union[float, Callable[[jax.Array], jax.Array]]
Path = tuple[str, ...]

# --------------------------------------------------------------------------------------------
# Keras update rules that optax does not provide as such
# --------------------------------------------------------------------------------------------


class KerasAdamState(NamedTuple):
    """State of :func:`scale_by_keras_adam`: step count, first and second moments."""
    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None


MU_DTYPES = ("float32", "bfloat16", "float16")


def scale_by_keras_adam(beta_1: float, beta_2: float, epsilon: float,
                        amsgrad: bool = False, mu_dtype: str | None = None) -> optax.GradientTransformation:
    """Adam's direction with Keras' epsilon placement: ``m * c / (sqrt(v) + eps)``.

    ``c = sqrt(1 - beta_2**t) / (1 - beta_1**t)``; multiply by ``-lr`` for the update. ``mu_dtype``
    (big_vision's option, e.g. "bfloat16") stores the first moment in that dtype, halving its memory;
    it is updated and used in the parameters' dtype.
    """
    if mu_dtype is not None and mu_dtype not in MU_DTYPES:
        raise unknown_name_error("mu_dtype", mu_dtype, MU_DTYPES)

    def stored(m):
        return m if mu_dtype is None else m.astype(mu_dtype)

    def init_fn(params):
        zeros = optax.tree.zeros_like(params)
        return KerasAdamState(count=jnp.zeros([], jnp.int32), mu=jax.tree.map(stored, zeros), nu=zeros,
                              nu_max=zeros if amsgrad else None)

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda g, m: m.astype(g.dtype) + (g - m.astype(g.dtype)) * (1 - beta_1), updates, state.mu)
        nu = jax.tree.map(lambda g, v: v + (jnp.square(g) - v) * (1 - beta_2), updates, state.nu)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None

        def direction(m, v):
            # the bias correction in float32 whatever the moments' dtype: in bfloat16 beta_2 = 0.999 is 1.0
            t = count.astype(jnp.promote_types(m.dtype, jnp.float32))
            correction = jnp.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
            return (m * correction / (jnp.sqrt(v) + epsilon)).astype(m.dtype)

        updates = jax.tree.map(direction, mu, nu_max if amsgrad else nu)
        return updates, KerasAdamState(count=count, mu=jax.tree.map(stored, mu), nu=nu, nu_max=nu_max)

    return optax.GradientTransformation(init_fn, update_fn)


def clip_by_norm_per_tensor(clipnorm: float) -> optax.GradientTransformation:
    """Keras' ``clipnorm``: each gradient tensor is rescaled to an L2 norm of at most ``clipnorm``."""

    def clip(g):
        norm = jnp.sqrt(jnp.sum(jnp.square(g)))
        return g * clipnorm / jnp.maximum(norm, clipnorm)

    return optax.stateless_with_tree_map(lambda g, _: clip(g))


def weight_decay_mask(params: Any) -> Any:
    """True for leaves that get weight decay: ``ndim >= 2`` (kernels), not biases or BN parameters."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


# --------------------------------------------------------------------------------------------
# Optimizer directions: (learning_rate, **Keras hyperparameters) -> the full update (lr applied).
# Defaults live in the signatures; they are Keras 3's.
# --------------------------------------------------------------------------------------------


def _sgd(learning_rate=0.01, momentum=0.0, nesterov=False):
    if momentum == 0:
        return optax.scale(-learning_rate)
    return optax.chain(optax.scale(-learning_rate), optax.trace(decay=momentum, nesterov=nesterov))


def _adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, mu_dtype=None):
    return optax.chain(scale_by_keras_adam(beta_1, beta_2, epsilon, amsgrad, mu_dtype),
                       optax.scale(-learning_rate))


def _rmsprop(learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
    scale_by = optax.scale_by_stddev if centered else optax.scale_by_rms
    steps = [scale_by(decay=rho, eps=epsilon, eps_in_sqrt=True), optax.scale(-learning_rate)]
    if momentum > 0:
        steps.append(optax.trace(decay=momentum))
    return optax.chain(*steps)


def _adagrad(learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7):
    return optax.chain(optax.scale_by_rss(initial_accumulator_value, eps=epsilon),
                       optax.scale(-learning_rate))


def _lion(learning_rate=0.001, beta_1=0.9, beta_2=0.99):
    return optax.chain(optax.scale_by_lion(b1=beta_1, b2=beta_2), optax.scale(-learning_rate))


@dataclasses.dataclass(frozen=True)
class _Spec:
    direction: Callable[..., optax.GradientTransformation]
    weight_decay: float | None = None

    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in inspect.signature(self.direction).parameters.items()}


OPTIMIZERS: Registry[_Spec] = Registry("optimizer")
OPTIMIZERS.register("sgd", _Spec(_sgd))
OPTIMIZERS.register("momentum", _Spec(functools.partial(_sgd, momentum=0.9)))
OPTIMIZERS.register("nesterov", _Spec(functools.partial(_sgd, momentum=0.9, nesterov=True)))
OPTIMIZERS.register("adam", _Spec(_adam))
OPTIMIZERS.register("adamw", _Spec(_adam, weight_decay=0.004))
OPTIMIZERS.register("rmsprop", _Spec(_rmsprop))
OPTIMIZERS.register("adagrad", _Spec(_adagrad))
OPTIMIZERS.register("lion", _Spec(_lion))

# Numeric arguments lie in [0, inf), these in [0, 1].
_UNIT_INTERVAL_ARGS = ("beta_1", "beta_2", "rho", "momentum")


def _lookup(name: str) -> _Spec:
    if not isinstance(name, str):
        raise ArgumentTypeError("optimizer must be a name (str) or an optax.GradientTransformation, "
                                f"got {type(name).__name__}.")
    key = name.lower()
    if key not in OPTIMIZERS:
        raise unknown_name_error("optimizer", name, OPTIMIZERS.names())
    return OPTIMIZERS.get(key)


def _check_number(owner: str, arg: str, value: Any, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{owner}: {arg} must be a number, got {value!r}.")
    lo, hi = (0.0, 1.0) if arg in _UNIT_INTERVAL_ARGS else (0.0, math.inf)
    if not lo <= value <= hi or not math.isfinite(value) or (positive and value == 0):
        bound = "> 0 and finite" if positive else ">= 0 and finite" if hi == math.inf else f"in [{lo}, {hi}]"
        raise ArgumentError(f"{owner}: {arg} must be {bound}, got {value!r}.")


def _check_hyperparameters(owner: str, defaults: Mapping[str, Any], given: Mapping[str, Any]):
    for arg, value in given.items():
        if arg == "mu_dtype":  # a dtype name
            if value is not None and value not in MU_DTYPES:
                raise unknown_name_error(f"{owner}: mu_dtype", value, MU_DTYPES)
            continue
        if isinstance(defaults[arg], bool):
            if not isinstance(value, bool):
                raise ArgumentTypeError(f"{owner}: {arg} must be True or False, got {value!r}.")
        else:
            _check_number(owner, arg, value)


_CLIP_ARGS = ("clipnorm", "clipvalue", "global_clipnorm")
_COMMON_ARGS = ("weight_decay", *_CLIP_ARGS)  # accepted by every optimizer, as in Keras


def _clipping(owner: str, clip_args: Mapping[str, float | None]) -> list[optax.GradientTransformation]:
    """Keras' gradient clipping as a (possibly empty) list of transformations."""
    given = {arg: value for arg, value in clip_args.items() if value is not None}
    if len(given) > 1:
        raise ArgumentError(f"{owner}: only one of clipnorm, clipvalue and global_clipnorm can be set, "
                            f"got {given}.")
    for arg, value in given.items():
        _check_number(owner, arg, value, positive=True)
    make = {"clipnorm": clip_by_norm_per_tensor, "clipvalue": optax.clip,
            "global_clipnorm": optax.clip_by_global_norm}
    return [make[arg](value) for arg, value in given.items()]


def get(name_or_transform: str | optax.GradientTransformation, learning_rate: LearningRate | None = None,
        **kwargs: Any) -> optax.GradientTransformation:
    """An optimizer by (case-insensitive) name with Keras 3 defaults, or a transformation unchanged.

    ``learning_rate`` is a float or an optax schedule (``step -> lr``); None means the Keras
    default. ``kwargs`` are Keras argument names: the optimizer's own (see the module table) and
    ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``.
    """
    if isinstance(name_or_transform, optax.GradientTransformation):
        if learning_rate is not None or kwargs:
            given = sorted(kwargs) + (["learning_rate"] if learning_rate is not None else [])
            raise ArgumentError(f"Arguments {given} only apply to optimizers given by name; the optax "
                                "transformation passed in is used as it is.")
        return name_or_transform
    spec = _lookup(name_or_transform)
    owner = f"optimizer {name_or_transform!r}"
    defaults = spec.defaults()
    valid = sorted(set(defaults) | set(_COMMON_ARGS))
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ArgumentError(f"{owner} got unknown argument(s) {unknown}. Valid arguments: "
                            f"{', '.join(valid)}.")
    weight_decay = kwargs.pop("weight_decay", spec.weight_decay)
    clipping = _clipping(owner, {arg: kwargs.pop(arg, None) for arg in _CLIP_ARGS})
    _check_hyperparameters(owner, defaults, kwargs)
    lr = defaults["learning_rate"] if learning_rate is None else learning_rate
    if not callable(lr):
        _check_number(owner, "learning_rate", lr)
    if weight_decay is not None or spec.weight_decay is not None:  # Keras' AdamW rejects None
        _check_number(owner, "weight_decay", weight_decay)

    def factory(learning_rate, weight_decay=None):
        steps = [*clipping, spec.direction(learning_rate, **kwargs)]
        if weight_decay is not None:
            steps.append(optax.add_decayed_weights(-learning_rate * weight_decay,
                                                   mask=weight_decay_mask))
        return optax.chain(*steps)

    # both injected: a state's value, so one compiled step serves members with other values (populations)
    decay = {"weight_decay": weight_decay} if weight_decay else {}
    return optax.inject_hyperparams(factory)(learning_rate=lr, **decay)


def default_learning_rate(name: str) -> float:
    """Keras 3's default learning rate of the optimizer called ``name``."""
    return _lookup(name).defaults()["learning_rate"]


# --------------------------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------------------------


def _constant(learning_rate, total_steps):
    del total_steps
    return learning_rate


def _cosine(learning_rate, total_steps, decay_steps=None, alpha=0.0):
    """Cosine decay from ``learning_rate`` to ``alpha * learning_rate`` over ``decay_steps``."""
    return optax.cosine_decay_schedule(learning_rate, decay_steps or total_steps, alpha=alpha)


def _warmup_cosine(learning_rate, total_steps, warmup_steps, decay_steps=None, alpha=0.0,
                   init_value=0.0):
    """Linear warmup from ``init_value`` to ``learning_rate``, then cosine decay to
    ``alpha * learning_rate``; ``decay_steps`` (default: total steps) includes the warmup."""
    decay_steps = decay_steps or total_steps
    if not 0 <= warmup_steps < decay_steps:
        raise ConfigError(f"schedule 'warmup_cosine': warmup_steps must be in [0, decay_steps="
                          f"{decay_steps}), got {warmup_steps!r}.")
    return optax.warmup_cosine_decay_schedule(init_value, learning_rate, warmup_steps, decay_steps,
                                              end_value=alpha * learning_rate)


def _exponential(learning_rate, total_steps, decay_steps, decay_rate, staircase=False):
    """Keras ``ExponentialDecay``: ``lr * decay_rate ** (step / decay_steps)`` (floored if staircase)."""
    del total_steps
    return optax.exponential_decay(learning_rate, decay_steps, decay_rate, staircase=staircase)


def _piecewise(learning_rate, total_steps, boundaries, values):
    """Keras ``PiecewiseConstantDecay``: ``values[i]`` for ``boundaries[i-1] < step <= boundaries[i]``.

    ``values`` are absolute learning rates, as in Keras; the configured learning rate is unused.
    """
    del learning_rate, total_steps
    if len(values) != len(boundaries) + 1:
        raise ConfigError(f"schedule 'piecewise': needs len(values) == len(boundaries) + 1, got "
                          f"{len(values)} values for {len(boundaries)} boundaries.")
    if any(later <= earlier for earlier, later in zip(boundaries, boundaries[1:])):
        raise ConfigError(f"schedule 'piecewise': boundaries must increase, got {list(boundaries)}.")
    bounds = jnp.asarray(boundaries)
    vals = jnp.asarray(values, dtype=jnp.float32)
    return lambda step: vals[jnp.searchsorted(bounds, step, side="left")]


SCHEDULES: Registry[Callable] = Registry("learning-rate schedule")
SCHEDULES.register("constant", _constant)
SCHEDULES.register("cosine", _cosine)
SCHEDULES.register("warmup_cosine", _warmup_cosine)
SCHEDULES.register("exponential", _exponential)
SCHEDULES.register("piecewise", _piecewise)


def make_schedule(spec: str | Mapping[str, Any] | None, learning_rate: float, *,
                  total_steps: int) -> LearningRate:
    """A learning rate (float) or optax schedule from ``{"name": ..., **arguments}`` (or a name).

    ``constant`` (or None) returns ``learning_rate`` itself. Arguments: ``cosine``: decay_steps
    (default ``total_steps``), alpha; ``warmup_cosine``: warmup_steps, decay_steps, alpha,
    init_value; ``exponential``: decay_steps, decay_rate, staircase; ``piecewise``: boundaries,
    values.
    """
    if spec is None:
        spec = "constant"
    args = {"name": spec} if isinstance(spec, str) else _plain_dict(spec, "schedule")
    if "name" not in args:
        raise ConfigError(f"schedule config needs a 'name'; valid names: {', '.join(SCHEDULES.names())}.")
    name = args.pop("name")
    fn = SCHEDULES.get(name)
    params = inspect.signature(fn).parameters
    valid = [p for p in params if p not in ("learning_rate", "total_steps")]
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise ConfigError(f"schedule {name!r} got unknown argument(s) {unknown}. Valid arguments: "
                          f"{', '.join(valid) or 'none'}.")
    missing = [p for p in valid if params[p].default is inspect.Parameter.empty and p not in args]
    if missing:
        raise ConfigError(f"schedule {name!r} needs argument(s) {missing}.")
    return fn(learning_rate, total_steps, **args)


def _plain_dict(cfg: Any, what: str) -> dict[str, Any]:
    """A plain dict copy of a Mapping or ml_collections ConfigDict."""
    cfg = tree.plain(cfg)
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ArgumentTypeError(f"{what} must be a mapping or ConfigDict, got {type(cfg).__name__}.")


def build_optimizer(cfg: Mapping[str, Any], *, total_steps: int) -> optax.GradientTransformation:
    """An optimizer from a config such as ``{"name": "adamw", "learning_rate": 1e-3,
    "schedule": {"name": "warmup_cosine", "warmup_steps": 100}, "clipnorm": 1.0}``.

    Keys other than ``name``, ``learning_rate`` and ``schedule`` are :func:`get`'s Keras arguments;
    a None value means "not set" (the Keras default). ``total_steps`` is the length of training,
    the default decay length of the cosine schedules.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ArgumentError(f"total_steps must be a positive int, got {total_steps!r}.")
    args = {k: v for k, v in _plain_dict(cfg, "optimizer config").items() if v is not None}
    if "name" not in args:
        raise ConfigError(f"optimizer config needs a 'name'; valid names: {', '.join(OPTIMIZERS.names())}.")
    name = args.pop("name")
    lr = args.pop("learning_rate", None)
    lr = default_learning_rate(name) if lr is None else lr
    _check_number(f"optimizer {name!r}", "learning_rate", lr)  # the base value of any schedule, too
    schedule = make_schedule(args.pop("schedule", None), lr, total_steps=total_steps)
    return get(name, learning_rate=schedule, **args)


INJECTED_STATES = (optax.InjectStatefulHyperparamsState, optax.InjectHyperparamsState)  # inject_hyperparams'


def set_hyperparameter(opt_state: Any, name: str, value: float) -> Any:
    """``opt_state`` with the injected hyperparameter ``name`` (e.g. ``weight_decay``) set to ``value``
    wherever it is injected (every parameter group); an optimizer without it is an ArgumentError."""
    states = INJECTED_STATES
    found = []

    def put(leaf):
        if isinstance(leaf, states) and name in leaf.hyperparams:
            found.append(leaf)
            old = leaf.hyperparams[name]
            return leaf._replace(hyperparams={**leaf.hyperparams, name: jnp.asarray(value, jnp.asarray(old).dtype)})
        return leaf

    out = jax.tree.map(put, opt_state, is_leaf=lambda x: isinstance(x, states))
    if not found:
        raise ArgumentError(f"The optimizer has no injected {name!r} to set (set optimizer.{name} to a non-zero "
                            "value in the config it is built from).")
    return out


def current_learning_rate(opt_state: Any) -> jax.Array | None:
    """The learning rate of the latest update (before any update: of the first), or None.

    Reads the first injected ``learning_rate`` found in ``opt_state``; for a :func:`partitioned`
    optimizer pass one group's state, ``opt_state.inner_states[label]``, to choose the group.
    """
    states = INJECTED_STATES
    for leaf in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, states)):
        if isinstance(leaf, states) and "learning_rate" in leaf.hyperparams:
            return leaf.hyperparams["learning_rate"]
    return None


# --------------------------------------------------------------------------------------------
# Parameter groups: transfer learning, fine-tuning
# --------------------------------------------------------------------------------------------


def partitioned(params: Any, labels: Callable[[Path], str] | Any,
                transforms: Mapping[str, str | optax.GradientTransformation]
                ) -> optax.GradientTransformation:
    """Each parameter group gets its own transformation (``optax.partition``).

    ``labels`` is a function from a leaf's path (a tuple of keys, e.g. ``("conv2d", "kernel")``) to
    a label, or a pytree of labels shaped like ``params``. ``transforms`` maps labels to optax
    transformations or optimizer names (Keras defaults). Example, a 10x smaller learning rate on a
    backbone: ``partitioned(params, lambda p: "backbone" if p[0] in names else "head",
    {"backbone": get("adam", 1e-4), "head": get("adam", 1e-3)})``.
    """
    if callable(labels):
        label_tree = jax.tree_util.tree_map_with_path(lambda kp, _: labels(tree.path_parts(kp)), params)
    else:
        label_tree = labels
    unknown = {}
    for keypath, label in jax.tree_util.tree_leaves_with_path(label_tree):
        if label not in transforms:
            unknown.setdefault(label, "/".join(tree.path_parts(keypath)))
    if unknown:
        described = ", ".join(f"{label!r} (e.g. at {path})" for label, path in unknown.items())
        raise ArgumentError(f"Parameter label(s) {described} have no transformation. Labels with one: "
                            f"{', '.join(map(repr, transforms))}.")
    return optax.partition({label: get(tx) for label, tx in transforms.items()}, label_tree)


def freeze(tx: str | optax.GradientTransformation, params: Any,
           trainable: Callable[[Path], bool]) -> optax.GradientTransformation:
    """``tx`` on the leaves whose path is ``trainable``; exactly zero updates on all others.

    Frozen leaves go through ``optax.set_to_zero()`` (never ``optax.masked``, which passes masked
    gradients through as updates), so they get no step, no momentum and no weight decay.
    """
    return partitioned(params, lambda path: "train" if trainable(path) else "frozen",
                       {"train": tx, "frozen": optax.set_to_zero()})
