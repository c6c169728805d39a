"""fluxnet.metrics: per-sample values against NumPy, accuracy's kind rule, names, masking, Keras 3."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxnet import losses, metrics

PROBS = np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.3, 0.3, 0.4], [0.6, 0.1, 0.3]], np.float32)
LABELS = np.array([1, 1, 0, 2])
ONEHOT = np.eye(3, dtype=np.float32)[LABELS]


def np_top_k(labels, scores, k):
    """Label rank (1 + number of strictly larger scores) <= k: ties count for the label, as in Keras."""
    at_label = scores[np.arange(len(labels)), labels]
    return ((scores > at_label[:, None]).sum(-1) + 1 <= k).astype(np.float32)


def test_sparse_and_categorical_accuracy_match_numpy():
    # Row 1 is a tie (0.5, 0.5): argmax takes the first index, so label 1 is missed.
    expected = (np.argmax(PROBS, -1) == LABELS).astype(np.float32)
    np.testing.assert_array_equal(expected, [1, 0, 0, 0])
    np.testing.assert_array_equal(metrics.sparse_categorical_accuracy(LABELS, PROBS), expected)
    np.testing.assert_array_equal(metrics.sparse_categorical_accuracy(LABELS[:, None], PROBS), expected)
    np.testing.assert_array_equal(metrics.sparse_categorical_accuracy(LABELS.astype(np.float32), PROBS),
                                  expected)
    np.testing.assert_array_equal(metrics.categorical_accuracy(ONEHOT, PROBS), expected)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_accuracies_match_numpy_ties_count_for_the_label(k):
    expected = np_top_k(LABELS, PROBS, k)
    np.testing.assert_array_equal(metrics.sparse_top_k_categorical_accuracy(LABELS, PROBS, k=k), expected)
    np.testing.assert_array_equal(metrics.sparse_top_k_categorical_accuracy(LABELS[:, None], PROBS, k=k),
                                  expected)
    np.testing.assert_array_equal(metrics.top_k_categorical_accuracy(ONEHOT, PROBS, k=k), expected)
    if k == 1:  # the tied row counts as a hit for top-1, unlike argmax accuracy
        np.testing.assert_array_equal(expected, [1, 1, 0, 0])


def test_binary_accuracy_thresholds_strictly_and_averages_labels_per_sample():
    y_pred = np.array([[0.2], [0.5], [0.51], [0.9]], np.float32)
    y_true = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(metrics.binary_accuracy(y_true, y_pred), [1, 0, 1, 0])
    np.testing.assert_array_equal(metrics.binary_accuracy(y_true[:, None], y_pred), [1, 0, 1, 0])
    np.testing.assert_array_equal(metrics.binary_accuracy(y_true, y_pred, threshold=0.1), [0, 1, 1, 0])
    multi_true = np.array([[1, 0, 1], [0, 0, 0]])
    multi_pred = np.array([[0.9, 0.8, 0.7], [0.1, 0.2, 0.6]], np.float32)
    np.testing.assert_allclose(metrics.binary_accuracy(multi_true, multi_pred), [2 / 3, 2 / 3], rtol=1e-6)


@pytest.mark.parametrize("true_shape,pred_shape,kind", [
    ((4, 1), (4, 1), "binary"),
    ((4,), (4, 1), "binary"),
    ((4,), (4,), "binary"),
    ((4,), (4, 3), "sparse"),
    ((4, 1), (4, 3), "sparse"),
    ((2, 5), (2, 5, 3), "sparse"),
    ((4, 3), (4, 3), "categorical"),
])
def test_accuracy_picks_its_kind_from_static_shapes(true_shape, pred_shape, kind):
    assert metrics.accuracy_kind(true_shape, pred_shape) == kind


def test_accuracy_dispatches_to_the_picked_metric():
    np.testing.assert_array_equal(metrics.accuracy(LABELS, PROBS),
                                  metrics.sparse_categorical_accuracy(LABELS, PROBS))
    np.testing.assert_array_equal(metrics.accuracy(ONEHOT, PROBS), metrics.categorical_accuracy(ONEHOT, PROBS))
    binary_pred = PROBS[:, :1] * 2
    np.testing.assert_array_equal(metrics.accuracy(LABELS % 2, binary_pred), [0, 1, 0, 0])


def test_metrics_are_per_sample_even_for_sequences():
    r = np.random.default_rng(0)
    t, p = r.normal(size=(2, 2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(metrics.get("mae")(t, p), np.abs(t - p).mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(metrics.get("mse")(t, p), ((t - p) ** 2).mean((1, 2)), rtol=1e-6)
    labels = r.integers(0, 3, size=(2, 5))
    np.testing.assert_allclose(metrics.accuracy(labels, p), (p.argmax(-1) == labels).mean(-1), rtol=1e-6)
    # A loss used as a metric keeps the loss' per-sample values on 2-D inputs.
    np.testing.assert_allclose(metrics.categorical_crossentropy(ONEHOT, PROBS),
                               losses.categorical_crossentropy(ONEHOT, PROBS), rtol=1e-6)


def test_mean_over_real_rows_under_jit():
    mask = jnp.array([True, True, True, False])

    @jax.jit
    def batch_accuracy(y_true, y_pred, mask):
        return metrics.mean_over(metrics.accuracy(y_true, y_pred), mask)

    expected = (np.argmax(PROBS, -1) == LABELS)[:3].mean()
    np.testing.assert_allclose(batch_accuracy(LABELS, PROBS, mask), expected)
    assert batch_accuracy(LABELS, PROBS, jnp.zeros(4, bool)) == 0.0
    np.testing.assert_allclose(metrics.mean_over(jnp.array([1.0, 0.0, 1.0, 1.0])), 0.75)


# ---------------------------------------------------------------------------------------------
# Names, registry and boundary checks
# ---------------------------------------------------------------------------------------------

ALIASES = {
    "accuracy": ["acc"],
    "binary_accuracy": [],
    "categorical_accuracy": [],
    "sparse_categorical_accuracy": [],
    "top_k_categorical_accuracy": [],
    "sparse_top_k_categorical_accuracy": [],
    "mean_absolute_error": ["mae"],
    "mean_squared_error": ["mse"],
    "mean_absolute_percentage_error": ["mape"],
    "mean_squared_logarithmic_error": ["msle"],
    "log_cosh": ["logcosh"],
    "kl_divergence": ["kld", "kullback_leibler_divergence"],
    "hinge": [],
    "squared_hinge": [],
    "categorical_hinge": [],
    "binary_crossentropy": ["bce"],
    "categorical_crossentropy": [],
    "sparse_categorical_crossentropy": [],
}


def test_names_and_aliases_resolve_to_the_module_functions():
    for name, aliases in ALIASES.items():
        fn = getattr(metrics, name)
        assert metrics.get(name) is fn
        assert all(metrics.get(alias) is fn for alias in aliases)
        assert metrics.name_of(fn) == name
    assert sorted(metrics.METRICS.names()) == sorted([*ALIASES, *sum(ALIASES.values(), [])])
    assert metrics.name_of("acc") == "acc"
    assert not hasattr(metrics.sparse_categorical_crossentropy, "valid_mask")


def test_unknown_metric_lists_valid_names_and_closest():
    with pytest.raises(ValueError) as err:
        metrics.get("acuracy")
    msg = str(err.value)
    assert "Unknown metric 'acuracy'" in msg and "Did you mean 'accuracy'" in msg
    assert "Valid names:" in msg and "sparse_top_k_categorical_accuracy" in msg


def test_get_register_and_options():
    def hits(y_true, y_pred):
        return jnp.sum(y_true == y_pred, axis=-1)

    assert metrics.get(hits) is hits and metrics.name_of(hits) == "hits"
    top2 = metrics.get("sparse_top_k_categorical_accuracy", k=2)
    np.testing.assert_array_equal(top2(LABELS, PROBS), np_top_k(LABELS, PROBS, 2))
    with pytest.raises(TypeError, match="threshold"):
        metrics.get("categorical_accuracy", threshold=0.3)
    metrics.register("fluxnet_test_hits", hits)
    try:
        assert metrics.get("fluxnet_test_hits") is hits
    finally:  # keep the global registry as the other tests expect it
        metrics.METRICS._items.pop("fluxnet_test_hits")


@pytest.mark.parametrize("call,match", [
    (lambda: metrics.categorical_accuracy(LABELS, PROBS), "use 'sparse_categorical_accuracy'"),
    (lambda: metrics.sparse_categorical_accuracy(ONEHOT, PROBS), "use 'categorical_accuracy'"),
    (lambda: metrics.top_k_categorical_accuracy(LABELS, PROBS), "use 'sparse_top_k_categorical_accuracy'"),
    (lambda: metrics.sparse_top_k_categorical_accuracy(LABELS, PROBS, k=0), "k must be a positive int"),
], ids=["cat-sparse", "sparse-onehot", "topk-sparse", "k0"])
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Keras 3 itself
# ---------------------------------------------------------------------------------------------

def test_every_metric_matches_keras():
    os.environ["KERAS_BACKEND"] = "jax"
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras was imported with another backend")
    from keras.src.metrics.reduction_metrics import MeanMetricWrapper
    from keras.src.trainers.compile_utils import get_metric

    r = np.random.default_rng(1)
    batch, classes = 8, 7
    probs = r.dirichlet(np.ones(classes), size=batch).astype(np.float32)
    labels = r.integers(0, classes, size=batch)
    onehot = np.eye(classes, dtype=np.float32)[labels]
    binary = r.integers(0, 2, size=(batch, 1)).astype(np.float32)
    sigm = r.uniform(size=(batch, 1)).astype(np.float32)
    reg_t, reg_p = r.normal(size=(2, batch, 3)).astype(np.float32)
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 1], np.float32)
    cases = [  # (name, y_true, y_pred, Keras metric built from its name, or None for compile's own)
        ("accuracy", labels, probs, None), ("accuracy", labels[:, None], probs, None),
        ("accuracy", onehot, probs, None), ("accuracy", binary, sigm, None),
        ("acc", binary[:, 0], sigm, None),
        ("binary_accuracy", binary, sigm, None), ("categorical_accuracy", onehot, probs, None),
        ("sparse_categorical_accuracy", labels, probs, None),
        ("top_k_categorical_accuracy", onehot, probs, None),
        ("sparse_top_k_categorical_accuracy", labels, probs, None),
    ] + [(name, y_true, y_pred, MeanMetricWrapper(getattr(keras.losses, name))) for name, y_true, y_pred in [
        ("mean_absolute_error", reg_t, reg_p), ("mean_squared_error", reg_t, reg_p),
        ("mean_absolute_percentage_error", reg_t, reg_p), ("mean_squared_logarithmic_error", reg_t, reg_p),
        ("log_cosh", reg_t, reg_p), ("kl_divergence", probs[::-1], probs), ("hinge", binary, reg_p[:, :1]),
        ("squared_hinge", binary, reg_p[:, :1]), ("categorical_hinge", onehot, probs),
        ("binary_crossentropy", binary, sigm), ("categorical_crossentropy", onehot, probs),
        ("sparse_categorical_crossentropy", labels, probs)]]
    assert {metrics.name_of(metrics.get(c[0])) for c in cases} == set(ALIASES)
    for name, y_true, y_pred, keras_metric in cases:
        keras_metric = keras_metric or get_metric(name, y_true, y_pred)
        keras_metric.update_state(y_true, y_pred, sample_weight=mask)
        ours = jax.jit(metrics.get(name))(y_true, y_pred)
        assert ours.shape == (batch,), name
        np.testing.assert_allclose(metrics.mean_over(ours, mask), keras_metric.result(), rtol=1e-5,
                                   err_msg=f"{name} {np.shape(y_true)} {np.shape(y_pred)}")
