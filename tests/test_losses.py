"""fluxnet.losses: values against NumPy formulas (edge cases included), gradients, jit, names, reduction."""
import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxnet import losses

EPS = 1e-7
# The upper clip bound 1 - eps as float32 holds it (0.99999988): what the float32 computation uses.
HI = float(np.float32(1.0 - EPS))


# ---------------------------------------------------------------------------------------------
# Independent NumPy references (float64)
# ---------------------------------------------------------------------------------------------

def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_cce(t, p, from_logits=False, label_smoothing=0.0):
    t = t * (1 - label_smoothing) + label_smoothing / t.shape[-1]
    logp = np_log_softmax(p) if from_logits else np.log(np.clip(p / p.sum(-1, keepdims=True), EPS, HI))
    return -(t * logp).sum(-1)


def np_scce(labels, p, from_logits=False, ignore_class=None):
    labels = labels.reshape(p.shape[:-1]).astype(int)
    logp = np_log_softmax(p) if from_logits else np.log(np.clip(p / p.sum(-1, keepdims=True), EPS, HI))
    out = np.zeros(labels.shape)
    for idx in np.ndindex(labels.shape):
        if labels[idx] != ignore_class:
            out[idx] = -logp[idx][labels[idx]]
    return out


def np_bce(t, p, from_logits=False, label_smoothing=0.0):
    t = t * (1 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        p = 1 / (1 + np.exp(-p))
    else:
        p = np.clip(p, EPS, HI)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(-1)


def np_kld(t, p):
    t, p = np.clip(t, EPS, 1), np.clip(p, EPS, 1)
    return (t * np.log(t / p)).sum(-1)


def np_hinge_labels(t):
    return 2 * t - 1 if np.all((t == 0) | (t == 1)) else t


def np_cosine(t, p):
    def unit(x):
        n = np.linalg.norm(x, axis=-1, keepdims=True)
        return x / np.maximum(n, EPS)
    return -(unit(t) * unit(p)).sum(-1)


R = np.random.default_rng(0)
REG_T = R.normal(size=(4, 3))
REG_P = R.normal(size=(4, 3))
PROBS = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.1, 0.8, 0.1]])
ONEHOT = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
LABELS = np.argmax(ONEHOT, -1)
LOGITS = R.normal(size=(4, 3)) * 3
BIN_T = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
BIN_P = np.array([[0.0, 1.0], [0.3, 1.0], [1.0, 0.0], [0.6, 0.2]])
PM1_T = 2 * BIN_T - 1
MIXED_T = np.array([[0.0, 1.0], [-1.0, 0.5], [2.0, 0.0], [1.0, -1.0]])

# (id, loss name, y_true, y_pred, options, NumPy reference)
CASES = [
    ("mse", "mean_squared_error", REG_T, REG_P, {}, lambda t, p: ((t - p) ** 2).mean(-1)),
    ("mae", "mean_absolute_error", REG_T, REG_P, {}, lambda t, p: np.abs(t - p).mean(-1)),
    ("mape-zero-targets", "mean_absolute_percentage_error",
     np.array([[0.0, 2.0], [-4.0, 0.0], [1.0, 1.0]]), np.array([[0.5, 1.0], [-2.0, 0.0], [0.0, 3.0]]), {},
     lambda t, p: 100 * np.abs((t - p) / np.maximum(np.abs(t), EPS)).mean(-1)),
    ("msle-negative", "mean_squared_logarithmic_error",
     np.array([[1.0, -2.0], [0.0, 3.0], [-1.0, -1.0]]), np.array([[-0.5, 2.0], [0.0, -3.0], [2.0, -1.0]]), {},
     lambda t, p: ((np.log(np.maximum(p, EPS) + 1) - np.log(np.maximum(t, EPS) + 1)) ** 2).mean(-1)),
    ("log_cosh", "log_cosh", REG_T, REG_P, {}, lambda t, p: np.log(np.cosh(p - t)).mean(-1)),
    ("log_cosh-large", "log_cosh", np.zeros((2, 2)), np.array([[100.0, -100.0], [0.0, 50.0]]), {},
     lambda t, p: (np.abs(p - t) + np.log1p(np.exp(-2 * np.abs(p - t))) - np.log(2)).mean(-1)),
    ("cce-exact-0-1", "categorical_crossentropy", ONEHOT, PROBS, {}, np_cce),
    ("cce-smoothing", "categorical_crossentropy", ONEHOT, PROBS, {"label_smoothing": 0.1},
     functools.partial(np_cce, label_smoothing=0.1)),
    ("cce-logits", "categorical_crossentropy", ONEHOT, LOGITS, {"from_logits": True},
     functools.partial(np_cce, from_logits=True)),
    ("cce-logits-smoothing", "categorical_crossentropy", ONEHOT, LOGITS,
     {"from_logits": True, "label_smoothing": 0.3},
     functools.partial(np_cce, from_logits=True, label_smoothing=0.3)),
    ("scce", "sparse_categorical_crossentropy", LABELS, PROBS, {}, np_scce),
    ("scce-labels-b1", "sparse_categorical_crossentropy", LABELS[:, None], PROBS, {}, np_scce),
    ("scce-logits", "sparse_categorical_crossentropy", LABELS, LOGITS, {"from_logits": True},
     functools.partial(np_scce, from_logits=True)),
    ("scce-ignore", "sparse_categorical_crossentropy", LABELS, PROBS, {"ignore_class": 1},
     functools.partial(np_scce, ignore_class=1)),
    ("scce-ignore-logits", "sparse_categorical_crossentropy", LABELS, LOGITS,
     {"ignore_class": 1, "from_logits": True},
     functools.partial(np_scce, ignore_class=1, from_logits=True)),
    ("bce-exact-0-1", "binary_crossentropy", BIN_T, BIN_P, {}, np_bce),
    ("bce-smoothing", "binary_crossentropy", BIN_T, BIN_P, {"label_smoothing": 0.2},
     functools.partial(np_bce, label_smoothing=0.2)),
    ("bce-logits", "binary_crossentropy", BIN_T, LOGITS[:, :2], {"from_logits": True},
     functools.partial(np_bce, from_logits=True)),
    ("bce-labels-b", "binary_crossentropy", BIN_T[:, 0], BIN_P[:, :1], {},
     lambda t, p: np_bce(t[:, None], p)),
    ("kld-exact-0-1", "kl_divergence", ONEHOT, PROBS, {}, np_kld),
    ("kld-soft", "kl_divergence", PROBS[[1, 3]], PROBS[[3, 1]], {}, np_kld),
    ("hinge-01", "hinge", BIN_T, REG_P[:, :2], {},
     lambda t, p: np.maximum(1 - np_hinge_labels(t) * p, 0).mean(-1)),
    ("hinge-pm1", "hinge", PM1_T, REG_P[:, :2], {}, lambda t, p: np.maximum(1 - t * p, 0).mean(-1)),
    ("hinge-mixed", "hinge", MIXED_T, REG_P[:, :2], {}, lambda t, p: np.maximum(1 - t * p, 0).mean(-1)),
    ("squared_hinge-01", "squared_hinge", BIN_T, REG_P[:, :2], {},
     lambda t, p: (np.maximum(1 - (2 * t - 1) * p, 0) ** 2).mean(-1)),
    ("squared_hinge-pm1", "squared_hinge", PM1_T, REG_P[:, :2], {},
     lambda t, p: (np.maximum(1 - t * p, 0) ** 2).mean(-1)),
    ("squared_hinge-mixed", "squared_hinge", MIXED_T, REG_P[:, :2], {},
     lambda t, p: (np.maximum(1 - t * p, 0) ** 2).mean(-1)),
    ("categorical_hinge", "categorical_hinge", ONEHOT, REG_P, {},
     lambda t, p: np.maximum(((1 - t) * p).max(-1) - (t * p).sum(-1) + 1, 0)),
    ("cosine", "cosine_similarity", REG_T, REG_P, {}, np_cosine),
    ("cosine-zero-vectors", "cosine_similarity", np.array([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0]]),
     np.array([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]), {}, np_cosine),
]


@pytest.mark.parametrize("name,y_true,y_pred,options,reference", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_loss_matches_numpy_jits_and_has_finite_gradients(name, y_true, y_pred, options, reference):
    fn = losses.get(name)
    y_true32, y_pred32 = jnp.asarray(y_true, jnp.float32), jnp.asarray(y_pred, jnp.float32)

    def total_and_values(p):
        values = fn(y_true32, p, **options)
        return jnp.sum(values), values

    # One compilation gives the values under jit and the gradient w.r.t. y_pred.
    (_, got), grad = jax.jit(jax.value_and_grad(total_and_values, has_aux=True))(y_pred32)
    expected = reference(np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64))
    assert got.shape == expected.shape == y_pred.shape[:-1]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(grad)), grad


def test_hinge_converts_only_when_all_labels_are_binary():
    pred = jnp.array([[0.5], [0.5]])
    # {0, 1}: 0 becomes -1; the same 0 next to a -1 stays 0.
    np.testing.assert_allclose(losses.hinge(jnp.array([[0.0], [1.0]]), pred), [1.5, 0.5])
    np.testing.assert_allclose(losses.hinge(jnp.array([[0.0], [-1.0]]), pred), [1.0, 1.5])
    np.testing.assert_allclose(losses.convert_binary_labels_to_hinge(jnp.array([1.0, 1.0])), [1.0, 1.0])


def test_ignored_positions_are_zero_and_have_zero_gradient():
    labels = jnp.array([0, 2, 2, 1])
    probs = jnp.array([[0.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 0.0], [0.1, 0.8, 0.1]])
    fn = functools.partial(losses.sparse_categorical_crossentropy, ignore_class=0)
    values, grad = jax.jit(lambda p: (fn(labels, p), jax.grad(lambda q: jnp.sum(fn(labels, q)))(p)))(probs)
    np.testing.assert_allclose(values[0], 0.0)
    np.testing.assert_array_equal(grad[0], 0.0)
    # An all-zero row that is NOT ignored is a NaN case in Keras too; the ignored one must not be.
    assert np.all(np.isfinite(np.asarray(grad)[[0, 1, 3]]))


def test_sequence_shapes_reduce_only_the_last_axis():
    t = R.normal(size=(2, 5, 3)).astype(np.float32)
    p = R.normal(size=(2, 5, 3)).astype(np.float32)
    out = losses.get("mse")(t, p)
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out, ((t - p) ** 2).mean(-1), rtol=1e-6)
    labels = np.array([[0, 1, 2, 1, 0], [2, 2, 1, 0, 1]])
    out = losses.sparse_categorical_crossentropy(labels, p, from_logits=True)
    np.testing.assert_allclose(out, np_scce(labels, p.astype(np.float64), from_logits=True), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Names and registry
# ---------------------------------------------------------------------------------------------

ALIASES = {
    "mean_squared_error": ["mse"],
    "mean_absolute_error": ["mae"],
    "mean_absolute_percentage_error": ["mape"],
    "mean_squared_logarithmic_error": ["msle"],
    "log_cosh": ["logcosh"],
    "categorical_crossentropy": [],
    "sparse_categorical_crossentropy": [],
    "binary_crossentropy": ["bce"],
    "kl_divergence": ["kld", "kullback_leibler_divergence"],
    "hinge": [],
    "squared_hinge": [],
    "categorical_hinge": [],
    "cosine_similarity": ["cosine_proximity"],
}


def test_names_and_aliases_resolve_to_the_module_functions():
    for name, aliases in ALIASES.items():
        fn = getattr(losses, name)
        assert losses.get(name) is fn
        assert all(losses.get(alias) is fn for alias in aliases)
        assert losses.name_of(fn) == name
    assert sorted(losses.LOSSES.names()) == sorted([*ALIASES, *sum(ALIASES.values(), [])])


def test_unknown_name_lists_valid_names_and_closest():
    with pytest.raises(ValueError) as err:
        losses.get("mean_squared_eror")
    msg = str(err.value)
    assert "'mean_squared_eror'" in msg and "Did you mean 'mean_squared_error'" in msg
    assert "Valid names:" in msg and "sparse_categorical_crossentropy" in msg


def test_get_passes_callables_and_binds_checked_options():
    custom = lambda y_true, y_pred: jnp.sum(y_pred - y_true, axis=-1)  # noqa: E731
    assert losses.get(custom) is custom
    bound = losses.get("categorical_crossentropy", from_logits=True)
    np.testing.assert_allclose(bound(ONEHOT, LOGITS), np_cce(ONEHOT, LOGITS, from_logits=True), rtol=1e-5)
    assert losses.name_of(bound) == "categorical_crossentropy"
    with pytest.raises(TypeError, match="categorical_crossentropy.*ignore_class"):
        losses.get("categorical_crossentropy", ignore_class=0)


def test_register_decorator_and_duplicate_names():
    @losses.register("fluxnet_test_abs_sum", aliases=("fluxnet_test_abs",))
    def abs_sum(y_true, y_pred):
        return jnp.sum(jnp.abs(y_pred - y_true), axis=-1)

    try:
        assert losses.get("fluxnet_test_abs") is abs_sum
        assert losses.compute_loss("fluxnet_test_abs_sum", np.zeros((2, 2)), np.ones((2, 2))) == 2.0
        with pytest.raises(ValueError, match="already registered"):
            losses.register("mse", abs_sum)
    finally:  # keep the global registry as the other tests expect it
        for key in ("fluxnet_test_abs_sum", "fluxnet_test_abs"):
            losses.LOSSES._items.pop(key)


# ---------------------------------------------------------------------------------------------
# Boundary checks
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,error,match", [
    (lambda: losses.categorical_crossentropy(LABELS, PROBS), ValueError,
     "use 'sparse_categorical_crossentropy'"),
    (lambda: losses.categorical_crossentropy(LABELS[:, None], PROBS), ValueError, "sparse_categorical"),
    (lambda: losses.sparse_categorical_crossentropy(ONEHOT, PROBS), ValueError,
     "use 'categorical_crossentropy'"),
    (lambda: losses.sparse_categorical_crossentropy(LABELS[:3], PROBS), ValueError, r"shape \(4,\)"),
    (lambda: losses.categorical_crossentropy(ONEHOT, PROBS, label_smoothing=1.5), ValueError, r"\[0, 1\]"),
    (lambda: losses.binary_crossentropy(BIN_T, BIN_P, label_smoothing=-0.1), ValueError, "label_smoothing"),
    (lambda: losses.binary_crossentropy(BIN_T, BIN_P, from_logits="yes"), TypeError, "from_logits"),
    (lambda: losses.sparse_categorical_crossentropy(LABELS, PROBS, ignore_class=1.0), TypeError,
     "ignore_class"),
    (lambda: losses.binary_crossentropy(BIN_T, PROBS), ValueError, "same shape"),
    (lambda: losses.categorical_hinge(LABELS, PROBS), ValueError, "same shape"),
    (lambda: losses.mean_squared_error(np.zeros((4, 2)), np.zeros((4, 3))), ValueError, "broadcast"),
    (lambda: losses.categorical_crossentropy(ONEHOT, PROBS, axis=2), ValueError, "axis"),
], ids=["cce-sparse", "cce-sparse-b1", "scce-onehot", "scce-batch", "cce-smooth", "bce-smooth",
        "bce-logits-flag", "scce-ignore-type", "bce-shape", "chinge-shape", "mse-shape", "cce-axis"])
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_single_class_categorical_crossentropy_warns():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses.categorical_crossentropy(np.ones((2, 1)), np.ones((2, 1)))
    assert any("binary_crossentropy" in str(w.message) for w in caught)


# ---------------------------------------------------------------------------------------------
# Reduction
# ---------------------------------------------------------------------------------------------

def test_reduce_loss_weights_divide_by_count_not_weight_sum():
    values = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(losses.reduce_loss(values), 2.5)
    np.testing.assert_allclose(losses.reduce_loss(values, jnp.array([1.0, 0.0, 2.0, 0.0])), 7.0 / 4)
    np.testing.assert_allclose(losses.reduce_loss(values, jnp.array([[1.0], [0.0], [2.0], [0.0]])), 7.0 / 4)


def test_reduce_loss_mask_counts_real_rows_only():
    values = jnp.array([1.0, 2.0, jnp.nan, jnp.inf])
    mask = jnp.array([True, True, False, False])
    weights = jnp.array([2.0, 1.0, 5.0, 5.0])
    reduce = jax.jit(losses.reduce_loss)
    np.testing.assert_allclose(reduce(values, None, mask), 1.5)
    np.testing.assert_allclose(reduce(values, weights, jnp.array([1, 1, 0, 0])), (2.0 + 2.0) / 2)
    assert reduce(values, weights, jnp.zeros(4, bool)) == 0.0
    grad = jax.grad(lambda v: losses.reduce_loss(v, mask=jnp.zeros(4, bool)))(jnp.ones(4))
    np.testing.assert_array_equal(grad, 0.0)


def test_reduce_loss_per_timestep_losses_with_row_mask():
    values = jnp.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(losses.reduce_loss(values, mask=jnp.array([1, 0, 1])), (0 + 1 + 4 + 5) / 4)
    np.testing.assert_allclose(losses.reduce_loss(values, jnp.array([1.0, 1.0, 0.0])), (0 + 1 + 2 + 3) / 6)


def test_reduce_loss_rejects_scalars_and_mismatched_shapes():
    with pytest.raises(ValueError, match=r"shape \(batch, 1\)"):
        losses.reduce_loss(losses.mean_squared_error(np.zeros(4), np.ones(4)))
    with pytest.raises(ValueError, match="mask of shape"):
        losses.reduce_loss(jnp.ones(4), mask=jnp.ones(3))
    with pytest.raises(ValueError, match="sample_weight of shape"):
        losses.reduce_loss(jnp.ones((4, 2)), jnp.ones((2,)))


def test_compute_loss_excludes_ignored_class_and_padded_rows():
    labels = jnp.array([0, 1, 1, 2])
    per_sample = np_scce(np.asarray(labels), PROBS)
    np.testing.assert_allclose(losses.compute_loss("sparse_categorical_crossentropy", labels, PROBS),
                               per_sample.mean(), rtol=1e-5)
    ignored = losses.compute_loss("sparse_categorical_crossentropy", labels, PROBS, ignore_class=1)
    np.testing.assert_allclose(ignored, (per_sample[0] + per_sample[3]) / 2, rtol=1e-5)
    bound = losses.get("sparse_categorical_crossentropy", ignore_class=1)
    np.testing.assert_array_equal(losses.valid_mask(bound, labels, PROBS), [True, False, False, True])
    masked_loss = jax.jit(functools.partial(losses.compute_loss, bound))
    padded = masked_loss(labels, PROBS, mask=jnp.array([1, 1, 1, 0]))
    np.testing.assert_allclose(padded, per_sample[0], rtol=1e-5)
    assert losses.valid_mask("mse", REG_T, REG_P) is None


# ---------------------------------------------------------------------------------------------
# Keras 3 itself
# ---------------------------------------------------------------------------------------------

def _keras():
    os.environ["KERAS_BACKEND"] = "jax"
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras was imported with another backend")
    return keras


def test_every_loss_matches_keras():
    keras = _keras()
    from keras.src.losses.loss import reduce_weighted_values
    from keras.src.losses.losses import LossFunctionWrapper

    r = np.random.default_rng(1)
    batch, classes = 6, 4
    probs = r.dirichlet(np.ones(classes), size=batch).astype(np.float32)
    logits = r.normal(size=(batch, classes)).astype(np.float32)
    labels = r.integers(0, classes, size=batch)
    onehot = np.eye(classes, dtype=np.float32)[labels]
    binary = r.integers(0, 2, size=(batch, 3)).astype(np.float32)
    sigm = r.uniform(size=(batch, 3)).astype(np.float32)
    reg_t, reg_p = r.normal(size=(2, batch, 3)).astype(np.float32)
    weights = r.uniform(size=batch).astype(np.float32)
    data = {
        "mean_squared_error": (reg_t, reg_p, {}),
        "mean_absolute_error": (reg_t, reg_p, {}),
        "mean_absolute_percentage_error": (reg_t, reg_p, {}),
        "mean_squared_logarithmic_error": (reg_t, reg_p, {}),
        "log_cosh": (reg_t, reg_p, {}),
        "categorical_crossentropy": (onehot, logits, {"from_logits": True, "label_smoothing": 0.1}),
        "sparse_categorical_crossentropy": (labels[:, None], probs, {}),
        "binary_crossentropy": (binary, sigm, {"label_smoothing": 0.2}),
        "kl_divergence": (probs[::-1], probs, {}),
        "hinge": (binary, reg_p, {}),
        "squared_hinge": (binary * 2 - 1, reg_p, {}),
        "categorical_hinge": (onehot, logits, {}),
        "cosine_similarity": (reg_t, reg_p, {}),
    }
    assert set(data) == set(ALIASES)
    for name, (y_true, y_pred, options) in data.items():
        keras_loss = LossFunctionWrapper(getattr(keras.losses, name), reduction=None, **options)
        ours = losses.get(name)(y_true, y_pred, **options)
        np.testing.assert_allclose(ours, keras_loss(y_true, y_pred), rtol=1e-5, atol=1e-6, err_msg=name)
        keras_reduced = LossFunctionWrapper(getattr(keras.losses, name), **options)
        np.testing.assert_allclose(losses.compute_loss(name, y_true, y_pred, weights, **options),
                                   keras_reduced(y_true, y_pred, sample_weight=weights),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    scce = keras.losses.SparseCategoricalCrossentropy(ignore_class=2, from_logits=True)
    np.testing.assert_allclose(
        losses.compute_loss("sparse_categorical_crossentropy", labels, logits, weights,
                            ignore_class=2, from_logits=True),
        scce(labels, logits, sample_weight=weights), rtol=1e-5)
    values = jnp.asarray(reg_p[:, 0])
    mask = np.array([1, 1, 0, 1, 0, 1], bool)
    np.testing.assert_allclose(losses.reduce_loss(values, weights, mask),
                               reduce_weighted_values(values, weights, mask), rtol=1e-5)
