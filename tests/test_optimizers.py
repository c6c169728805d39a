"""fluxnet.optimizers: Keras 3 defaults and formulas, schedules, clipping, decay mask, freezing."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fluxnet import optimizers as fo

KERNEL0 = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
# Three steps of gradients; 1e-6 exposes where epsilon sits.
GRADS = [np.array([[0.1, -0.2], [1e-6, 2.0]], np.float32),
         np.array([[-0.3, 0.4], [1e-6, -1.0]], np.float32),
         np.array([[0.2, 0.05], [2e-6, 0.5]], np.float32)]


def run(tx, params, grads_list, jit=False):
    """Apply ``tx`` for len(grads_list) steps; returns the final params and opt state."""
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    for grads in grads_list:
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


# ------------------------------------------------------------------------------------------------
# Keras 3 itself, jax backend
# ------------------------------------------------------------------------------------------------

def _keras_cases(keras):
    exp = dict(name="exponential", decay_steps=1, decay_rate=0.5)
    return [
        ("sgd", {}, keras.optimizers.SGD()),
        ("momentum", {}, keras.optimizers.SGD(momentum=0.9)),
        ("nesterov", {}, keras.optimizers.SGD(momentum=0.9, nesterov=True)),
        ("Adam", {}, keras.optimizers.Adam()),
        ("adam", {"amsgrad": True}, keras.optimizers.Adam(amsgrad=True)),
        ("adamw", {}, keras.optimizers.AdamW()),
        ("RMSprop", {}, keras.optimizers.RMSprop()),
        ("rmsprop", {"momentum": 0.5, "centered": True},
         keras.optimizers.RMSprop(momentum=0.5, centered=True)),
        ("adagrad", {}, keras.optimizers.Adagrad()),
        ("lion", {}, keras.optimizers.Lion()),
        ("sgd", {"clipnorm": 0.5}, keras.optimizers.SGD(clipnorm=0.5)),
        ("adam", {"global_clipnorm": 0.5, "weight_decay": 0.1},
         keras.optimizers.Adam(global_clipnorm=0.5, weight_decay=0.1)),
        ("sgd", {"clipvalue": 0.15}, keras.optimizers.SGD(clipvalue=0.15)),
        # Learning rate inside SGD's momentum: differs from optax.sgd under a schedule.
        ("sgd", {"momentum": 0.9, "schedule": exp},
         keras.optimizers.SGD(momentum=0.9, learning_rate=keras.optimizers.schedules.ExponentialDecay(
             0.01, decay_steps=1, decay_rate=0.5))),
    ]


def test_updates_match_keras_jax_backend():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras was imported with another backend")
    for name, kwargs, keras_opt in _keras_cases(keras):
        variable = keras.Variable(KERNEL0)
        for grads in GRADS:
            keras_opt.apply_gradients([(grads, variable)])
        kwargs = dict(kwargs)
        schedule = kwargs.pop("schedule", None)
        lr = fo.make_schedule(schedule, fo.default_learning_rate(name), total_steps=3)
        ours, _ = run(fo.get(name, learning_rate=lr, **kwargs), {"k": jnp.asarray(KERNEL0)},
                      [{"k": jnp.asarray(g)} for g in GRADS])
        np.testing.assert_allclose(ours["k"], np.asarray(variable), rtol=2e-6, atol=1e-7,
                                   err_msg=f"{name} {kwargs}")


def test_schedules_match_keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    steps = np.array([0, 5, 9, 10, 11, 20, 21, 35])
    pairs = [
        (fo.make_schedule({"name": "exponential", "decay_steps": 10, "decay_rate": 0.5,
                           "staircase": True}, 0.1, total_steps=100),
         keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True)),
        (fo.make_schedule({"name": "piecewise", "boundaries": [10, 20], "values": [1.0, 0.5, 0.1]},
                          0.1, total_steps=100),
         keras.optimizers.schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])),
    ]
    for ours, theirs in pairs:
        np.testing.assert_allclose([float(ours(s)) for s in steps],
                                   [float(theirs(int(s))) for s in steps], rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Independent formulas
# ------------------------------------------------------------------------------------------------

def one_step(name, grad):
    """The first update of optimizer ``name`` (Keras defaults) for gradient ``grad``."""
    params = jnp.ones((1, 2))
    tx = fo.get(name)
    updates, _ = tx.update(jnp.full((1, 2), grad), tx.init(params), params)
    return float(updates[0, 0])


@pytest.mark.parametrize("grad", [0.5, 1e-6])
def test_one_step_against_numpy_formulas(grad):
    g = np.float64(grad)
    # Keras Adam: alpha = lr * sqrt(1 - b2) / (1 - b1); -alpha * m / (sqrt(v) + 1e-7).
    m, v = 0.1 * g, 0.001 * g * g
    adam = -1e-3 * np.sqrt(1 - 0.999) / (1 - 0.9) * m / (np.sqrt(v) + 1e-7)
    expected = {
        "sgd": -0.01 * g,
        "nesterov": -0.01 * g * (1 + 0.9),
        "adam": adam,
        "rmsprop": -1e-3 * g / np.sqrt(0.1 * g * g + 1e-7),        # epsilon inside the root
        "adagrad": -1e-3 * g / np.sqrt(0.1 + g * g + 1e-7),
        "lion": -1e-3 * np.sign(g),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(one_step(name, grad), value, rtol=1e-4, err_msg=name)
    if grad < 1e-3:  # optax.adam's epsilon placement would give a visibly different step here
        optax_adam = -1e-3 * g / (g + 1e-7)
        assert abs(one_step("adam", grad) - optax_adam) > 0.1 * abs(optax_adam)


def test_weight_decay_skips_one_dimensional_leaves():
    params = {"dense": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full((3,), 2.0)},
              "batch_normalization": {"scale": jnp.full((3,), 2.0)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    tx = fo.get("adamw")  # Keras default weight_decay=0.004, lr=0.001
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["dense"]["kernel"], -1e-3 * 0.004 * 2.0, rtol=1e-6)
    assert not np.any(updates["dense"]["bias"])
    assert not np.any(updates["batch_normalization"]["scale"])
    assert fo.weight_decay_mask(params) == {"dense": {"kernel": True, "bias": False},
                                            "batch_normalization": {"scale": False}}


def test_clipping():
    params = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.3, 0.4])}  # norms 5 and 0.5

    def update(**clip):
        tx = fo.get("sgd", learning_rate=1.0, **clip)
        return tx.update(grads, tx.init(params), params)[0]

    per_tensor = update(clipnorm=1.0)
    np.testing.assert_allclose(per_tensor["a"], [-0.6, -0.8], rtol=1e-6)
    np.testing.assert_allclose(per_tensor["b"], [-0.3, -0.4], rtol=1e-6)
    total = np.sqrt(25.25)
    glob = update(global_clipnorm=1.0)
    np.testing.assert_allclose(glob["b"], -np.array([0.3, 0.4]) / total, rtol=1e-6)
    np.testing.assert_allclose(update(clipvalue=0.35)["a"], [-0.35, -0.35])
    with pytest.raises(ValueError, match="only one of clipnorm"):
        fo.get("sgd", clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="clipnorm must be > 0"):
        fo.get("sgd", clipnorm=0.0)


def test_schedule_values():
    cos = fo.make_schedule({"name": "cosine", "alpha": 0.1}, 0.2, total_steps=100)
    np.testing.assert_allclose([cos(0), cos(50), cos(100)], [0.2, 0.2 * 0.55, 0.02], rtol=1e-5)
    warm = fo.make_schedule({"name": "warmup_cosine", "warmup_steps": 10}, 0.1, total_steps=110)
    np.testing.assert_allclose([warm(0), warm(5), warm(10), warm(60), warm(110)],
                               [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-7)
    exp = fo.make_schedule({"name": "exponential", "decay_steps": 10, "decay_rate": 0.5}, 1.0,
                           total_steps=1)
    np.testing.assert_allclose([exp(5), exp(10)], [0.5 ** 0.5, 0.5], rtol=1e-6)
    piece = fo.make_schedule({"name": "piecewise", "boundaries": [10, 20],
                              "values": [1.0, 0.5, 0.1]}, 0.1, total_steps=1)
    np.testing.assert_allclose([piece(s) for s in (0, 10, 11, 20, 21)], [1, 1, 0.5, 0.5, 0.1],
                               rtol=1e-6)
    assert fo.make_schedule(None, 0.3, total_steps=5) == 0.3
    assert fo.make_schedule("constant", 0.3, total_steps=5) == 0.3


def test_build_optimizer_and_current_learning_rate():
    import ml_collections
    cfg = ml_collections.ConfigDict({
        "name": "adamw", "learning_rate": 0.1, "weight_decay": None, "clipnorm": 1.0,
        "clipvalue": None, "global_clipnorm": None,
        "schedule": {"name": "warmup_cosine", "warmup_steps": 2}})
    tx = fo.build_optimizer(cfg, total_steps=6)
    params = {"k": jnp.ones((2, 2))}
    state = tx.init(params)
    assert float(fo.current_learning_rate(state)) == 0.0
    step = jax.jit(tx.update)
    seen = []
    for _ in range(4):
        _, state = step({"k": jnp.ones((2, 2))}, state, params)
        seen.append(float(fo.current_learning_rate(state)))  # the lr of the update just made
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.1, 2, 6)
    np.testing.assert_allclose(seen, [schedule(i) for i in range(4)], rtol=1e-6)
    assert fo.current_learning_rate(optax.adam(1e-3).init(params)) is None
    # None values mean "Keras default": lr 0.01 for SGD.
    sgd = fo.build_optimizer({"name": "SGD", "learning_rate": None}, total_steps=1)
    assert float(fo.current_learning_rate(sgd.init(params))) == pytest.approx(0.01)


def test_freeze_gives_bit_exact_zero_updates():
    key = jax.random.key(0)
    params = {"conv2d": {"kernel": jax.random.normal(key, (3, 3, 1, 2)), "bias": jnp.ones(2)},
              "batch_normalization": {"scale": jnp.ones(2), "bias": jnp.zeros(2)},
              "dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    before = jax.tree.map(np.asarray, params)
    grads = [jax.tree.map(lambda p, i=i: jnp.full_like(p, 0.1 * (i + 1)), params) for i in range(3)]
    for inner in (fo.get("sgd", 0.1, momentum=0.9, weight_decay=0.5), fo.get("adamw", 0.1)):
        tx = fo.freeze(inner, params, trainable=lambda path: path[0] == "dense")
        after, state = run(tx, params, grads, jit=True)
        for layer in ("conv2d", "batch_normalization"):
            for name, value in after[layer].items():
                assert np.array_equal(np.asarray(value), before[layer][name]), (layer, name)
        assert not np.allclose(after["dense"]["kernel"], before["dense"]["kernel"])
        assert float(fo.current_learning_rate(state)) == pytest.approx(0.1)


def test_partitioned_learning_rates():
    params = {"backbone": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 2))}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    tx = fo.partitioned(params, lambda path: path[0],
                        {"backbone": fo.get("sgd", 0.01), "head": "sgd"})
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["backbone"]["kernel"], -0.005, rtol=1e-6)
    np.testing.assert_allclose(updates["head"]["kernel"], -0.005, rtol=1e-6)
    tx = fo.partitioned(params, {"backbone": "small", "head": "big"},
                        {"small": fo.get("sgd", 0.001), "big": fo.get("sgd", 0.1)})
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["backbone"]["kernel"], -0.0005, rtol=1e-6)
    np.testing.assert_allclose(updates["head"]["kernel"], -0.05, rtol=1e-6)
    assert float(fo.current_learning_rate(state.inner_states["small"])) == pytest.approx(0.001)
    with pytest.raises(ValueError, match=r"'head' \(e.g. at head/kernel\) have no transformation"):
        fo.partitioned(params, lambda path: path[0], {"backbone": "sgd"})


def test_errors_and_pass_through():
    tx = optax.sgd(0.1)
    assert fo.get(tx) is tx
    with pytest.raises(ValueError, match="only apply to optimizers given by name"):
        fo.get(tx, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adma'. Did you mean 'adam'"):
        fo.get("adma")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['beta1'\].*beta_1"):
        fo.get("adam", beta1=0.9)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['rho'\]"):
        fo.get("sgd", rho=0.9)
    with pytest.raises(TypeError, match="momentum must be a number"):
        fo.get("sgd", momentum="high")
    with pytest.raises(ValueError, match=r"beta_1 must be in \[0.0, 1.0\]"):
        fo.get("lion", beta_1=1.5)
    with pytest.raises(TypeError, match="nesterov must be True or False"):
        fo.get("sgd", nesterov=1)
    with pytest.raises(TypeError, match="weight_decay must be a number, got None"):
        fo.get("adamw", weight_decay=None)
    with pytest.raises(ValueError, match=r"Unknown learning-rate schedule 'cosin'.*'cosine'"):
        fo.make_schedule("cosin", 0.1, total_steps=10)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['warmup'\].*warmup_steps"):
        fo.make_schedule({"name": "warmup_cosine", "warmup": 3}, 0.1, total_steps=10)
    with pytest.raises(ValueError, match=r"needs argument\(s\) \['decay_steps', 'decay_rate'\]"):
        fo.make_schedule({"name": "exponential"}, 0.1, total_steps=10)
    with pytest.raises(ValueError, match="len\\(values\\) == len\\(boundaries\\) \\+ 1"):
        fo.make_schedule({"name": "piecewise", "boundaries": [1], "values": [1.0]}, 0.1,
                         total_steps=10)
    with pytest.raises(ValueError, match="needs a 'name'"):
        fo.build_optimizer({"learning_rate": 0.1}, total_steps=10)
    with pytest.raises(ValueError, match="total_steps must be a positive int"):
        fo.build_optimizer({"name": "adam"}, total_steps=0)


def test_adam_can_keep_its_first_moment_in_bfloat16():
    params = {"w": jnp.linspace(-1.0, 1.0, 64, dtype=jnp.float32)}
    grads = [{"w": jnp.sin(jnp.arange(64, dtype=jnp.float32) * (i + 1))} for i in range(5)]
    outs = {}
    for mu_dtype in (None, "bfloat16"):
        tx = fo.get("adam", learning_rate=1e-2, mu_dtype=mu_dtype)
        state, p = tx.init(params), params
        for g in grads:
            updates, state = tx.update(g, state, p)
            p = optax.apply_updates(p, updates)
        mu = jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, fo.KerasAdamState))
        mu = next(s.mu for s in mu if isinstance(s, fo.KerasAdamState))
        outs[mu_dtype] = (p["w"], mu["w"].dtype)
    assert outs[None][1] == jnp.float32 and outs["bfloat16"][1] == jnp.bfloat16   # half the memory
    np.testing.assert_allclose(outs["bfloat16"][0], outs[None][0], atol=2e-4)     # the update is in float32
    assert not np.array_equal(outs["bfloat16"][0], outs[None][0])
    with pytest.raises(ValueError, match="mu_dtype"):
        fo.get("adam", mu_dtype="int8")
