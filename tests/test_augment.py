"""Tests for fluxnet.augment: Keras semantics, NumPy constructions, per-example randomness, jit."""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxnet import augment as A

H = W = 8
N = 16                  # batch size shared by most tests, so equal pipelines reuse one compilation
_JITTED: dict = {}


def jitted(fn):
    """One cached jitted function per (equal, hashable) op or pipeline: few compilations."""
    return _JITTED.setdefault(fn, jax.jit(fn, static_argnames="training"))


def run(pipeline, key, images, labels=None, training=True):
    images, labels = jitted(pipeline)(key, images, labels, training=training)
    return np.asarray(images), None if labels is None else np.asarray(labels)


def call(op, key, image):
    """A per-example op on one image (jitted)."""
    return np.asarray(jitted(op)(key, image))


def key(seed=0):
    return jax.random.key(seed)


def image(seed=0, shape=(H, W, 3), low=1.0, high=255.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def same_batch(n, seed=0, **kwargs):
    return np.repeat(image(seed, **kwargs)[None], n, axis=0)


FLIP = A.RandomFlip()
PAD_CROP = A.RandomPadCrop(2)
CROP = A.RandomCrop(6, 5)
BRIGHTNESS = A.RandomBrightness(0.3, probability=0.5)
CONTRAST = A.RandomContrast(0.5, value_range=(60, 190))
ERASING = A.RandomErasing(factor=(1.0, 1.0), scale=(0.25, 0.25))      # Gaussian-noise fill
RANDOM_OPS = [FLIP, A.RandomRotation(0.2), A.RandomZoom(0.3, 0.2),
              A.RandomTranslation(0.2, 0.2, fill_mode="constant"), PAD_CROP, CROP, BRIGHTNESS,
              CONTRAST, ERASING]


@pytest.mark.parametrize("op", RANDOM_OPS, ids=lambda op: type(op).__name__)
def test_image_op_shape_determinism_and_per_example_randomness(op):
    pipeline = A.Pipeline([op])
    batch = same_batch(N)
    out, _ = run(pipeline, key(0), batch)
    expected_shape = (N, 6, 5, 3) if op is CROP else batch.shape
    assert out.shape == expected_shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, run(pipeline, key(0), batch)[0])       # same key, same output
    assert not np.array_equal(out, run(pipeline, key(1), batch)[0])           # new key, new output
    distinct = {out[i].tobytes() for i in range(len(out))}                    # one key per example
    assert len(distinct) > 1


def test_evaluation_is_identity_and_zero_strength_is_identity():
    batch = np.stack([image(s) for s in range(4)])
    labels = np.arange(4)
    ops = [A.RandomRotation(0.0), A.RandomZoom(0.0), A.RandomBrightness(0.0), A.RandomContrast(0.0)]
    out, _ = run(A.Pipeline(ops), key(3), batch)
    np.testing.assert_allclose(out, batch, rtol=0, atol=1e-4)
    strong = A.Pipeline([op for op in RANDOM_OPS if op is not CROP] + [A.MixUp(), A.CutMix()],
                        num_classes=5)
    out, same_labels = run(strong, key(3), batch, labels, training=False)
    np.testing.assert_array_equal(out, batch)
    np.testing.assert_array_equal(same_labels, labels)


def test_dtype_kept_and_integer_images_become_float32():
    assert jitted(BRIGHTNESS)(key(), jnp.asarray(image(), jnp.bfloat16)).dtype == jnp.bfloat16
    assert jitted(FLIP)(key(), image().astype(np.uint8)).dtype == jnp.float32
    with pytest.raises(ValueError, match="rank 3"):
        FLIP(key(), image()[None])
    with pytest.raises(ValueError, match="rank 4"):
        A.Pipeline([FLIP])(key(), image())


@pytest.mark.parametrize("mode, options", [
    ("horizontal", lambda x: [x, x[:, ::-1]]),
    ("vertical", lambda x: [x, x[::-1]]),
    ("horizontal_and_vertical", lambda x: [x, x[:, ::-1], x[::-1], x[::-1, ::-1]]),
])
def test_flip_is_exact_and_uses_every_outcome(mode, options):
    batch = same_batch(N)
    out, _ = run(A.Pipeline([A.RandomFlip(mode)]), key(0), batch)
    candidates = options(batch[0])
    hits = [next(i for i, c in enumerate(candidates) if np.array_equal(o, c)) for o in out]
    assert set(hits) == set(range(len(candidates)))     # each axis is flipped independently


@pytest.mark.parametrize("turns, k, interpolation", [(0.25, 1, "nearest"), (0.25, 1, "bilinear"),
                                                     (-0.25, -1, "nearest")])
def test_rotation_by_quarter_turns_equals_rot90(turns, k, interpolation):
    x = image(1)                        # positive turns are counter-clockwise, as np.rot90
    op = A.RandomRotation((turns, turns), fill_mode="constant", interpolation=interpolation)
    np.testing.assert_allclose(call(op, key(), x), np.rot90(x, k), rtol=0, atol=1e-3)


def numpy_shift(x, dy, dx, mode, fill=0.0):
    """x shifted down by dy and right by dx, the border filled by NumPy's padding ``mode``."""
    pad = max(abs(dy), abs(dx))
    kwargs = {"constant_values": fill} if mode == "constant" else {}
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode=mode, **kwargs)
    return padded[pad - dy:pad - dy + x.shape[0], pad - dx:pad - dx + x.shape[1]]


NUMPY_PAD_MODES = {"constant": "constant", "nearest": "edge", "reflect": "symmetric", "wrap": "wrap"}


def translation(fill_mode):
    """Shift 2 pixels down and 3 left on 8x8 images."""
    return A.RandomTranslation((0.25, 0.25), (-0.375, -0.375), fill_mode=fill_mode, fill_value=7.0)


@pytest.mark.parametrize("fill_mode", list(NUMPY_PAD_MODES))
def test_integer_translation_equals_numpy_shift(fill_mode):
    x = image(2)
    op = translation(fill_mode)
    expected = numpy_shift(x, 2, -3, NUMPY_PAD_MODES[fill_mode], fill=7.0)   # 2 down, 3 left
    np.testing.assert_allclose(call(op, key(), x), expected, rtol=0, atol=1e-4)


def test_consecutive_geometric_ops_resample_once_through_the_matrix_product():
    """Two translations in a pipeline act as one shift (one resampling of the original pixels), and a
    rotation between them keeps the composition order: shift, then quarter turn, then shift."""
    x = image(2)
    down = A.RandomTranslation((0.25, 0.25), (0.0, 0.0), fill_mode="constant", fill_value=7.0)
    left = A.RandomTranslation((0.0, 0.0), (-0.375, -0.375), fill_mode="constant", fill_value=7.0)
    pipe = A.Pipeline((down, left))
    out, _ = pipe(key(), x[None])
    np.testing.assert_allclose(out[0], numpy_shift(x, 2, -3, "constant", fill=7.0), rtol=0, atol=1e-4)
    turn = A.RandomRotation((0.25, 0.25), fill_mode="constant", fill_value=7.0)
    out, _ = A.Pipeline((down, turn))(key(), x[None])
    sequential = call(turn, key(), numpy_shift(x, 2, 0, "constant", fill=7.0))
    np.testing.assert_allclose(out[0], sequential, rtol=0, atol=1e-4)


def test_pad_crop_is_a_zero_padded_window():
    batch = same_batch(N, seed=3)
    out, _ = run(A.Pipeline([PAD_CROP]), key(0), batch)
    windows = {(dy, dx): numpy_shift(batch[0], dy, dx, "constant")
               for dy in range(-2, 3) for dx in range(-2, 3)}
    found = [next(s for s, w in windows.items() if np.array_equal(o, w)) for o in out]
    assert len(set(found)) > 4


def test_zoom_sign_convention():
    ones = np.ones((H, W, 1), np.float32)
    zoom_out = A.RandomZoom((0.5, 0.5), fill_mode="constant", interpolation="nearest")
    zoom_in = A.RandomZoom((-0.5, -0.5), fill_mode="constant", interpolation="nearest")
    out = call(zoom_out, key(), ones)[..., 0]
    assert out[0].sum() == 0 and out[:, 0].sum() == 0 and out[3:5, 3:5].all()   # shrunk: borders
    assert call(zoom_in, key(), ones).all()                                # enlarged: none
    x = image(4, shape=(H, W, 1))
    zoomed = call(zoom_in, key(), x)[..., 0]
    src = np.floor(0.5 * np.arange(H) + 1.75 + 0.5).astype(int)     # centre-anchored 2x enlargement
    np.testing.assert_array_equal(zoomed, x[..., 0][np.ix_(src, src)])


def test_brightness_matches_keras_formula_and_clips():
    batch = np.stack([image(s, low=0.0, high=1.0) for s in range(N)])
    op = A.RandomBrightness((0.1, 0.3), value_range=(0, 1))
    out, _ = run(A.Pipeline([op]), key(0), batch)
    assert out.min() >= 0.0 and out.max() <= 1.0 and (out == 1.0).any()
    for x, o in zip(batch, out):
        inside = o < 1.0
        delta = (o - x)[inside]
        np.testing.assert_allclose(delta, delta[0], atol=1e-6)
        assert 0.1 - 1e-6 <= delta[0] <= 0.3 + 1e-6
        np.testing.assert_allclose(o, np.clip(x + delta[0], 0, 1), atol=1e-6)
    batch = same_batch(N, low=80, high=170)
    deltas = (run(A.Pipeline([BRIGHTNESS]), key(1), batch)[0] - batch).mean(axis=(1, 2, 3))
    assert deltas.min() < 0 < deltas.max() and np.abs(deltas).max() <= 0.3 * 255 + 1e-3


@pytest.mark.parametrize("op, c_range", [(A.RandomContrast((0.2, 0.4), value_range=(60, 190)),
                                          (0.8, 1.4)), (CONTRAST, (0.5, 1.5))])
def test_contrast_matches_keras_formula_and_clips(op, c_range):
    low, high = 60.0, 190.0
    batch = np.stack([image(s, low=40, high=220) for s in range(N)])
    out, _ = run(A.Pipeline([op]), key(0), batch)
    assert out.min() >= low and out.max() <= high
    contrasts = []
    for x, o in zip(batch, out):
        mean = x.mean(axis=(0, 1), keepdims=True)
        ok = (o > low) & (o < high) & (np.abs(x - mean) > 5)
        c = np.median(((o - mean) / (x - mean))[ok])
        np.testing.assert_allclose(o, np.clip((x - mean) * c + mean, low, high), atol=1e-3)
        contrasts.append(c)
    assert c_range[0] - 1e-4 <= min(contrasts) < 1 < max(contrasts) <= c_range[1] + 1e-4


def test_erasing_fills_a_rectangle_of_the_requested_area():
    batch = same_batch(N)
    out, _ = run(A.Pipeline([ERASING]), key(0), batch)
    assert out.min() >= 0 and out.max() <= 255                     # noise clipped to value_range
    corners = set()
    for o in out:
        erased = o != batch[0]
        rows, cols = np.nonzero(erased.any(-1))       # sqrt(0.25) * 8 = 4 pixels per side
        assert len(rows) == 16 and np.ptp(rows) == 3 and np.ptp(cols) == 3
        assert np.array_equal(erased.any(-1), erased.all(-1))
        corners.add((rows.min(), cols.min()))
    assert len(corners) > 1
    per_channel = A.RandomErasing(factor=(1.0, 1.0), scale=(0.25, 0.25), fill_value=(0, 50, 300))
    out = call(per_channel, key(2), image())
    assert ((out == [0, 50, 255]).all(-1)).sum() == 16     # fill clipped to value_range
    with pytest.raises(ValueError, match="channels"):
        A.RandomErasing(fill_value=(1.0, 2.0))(key(), image())


def partners(soft_labels):
    """(own weight, partner index) per example from labels mixing one-hot rows of arange(B)."""
    weights, partner = [], []
    for i, row in enumerate(soft_labels):
        np.testing.assert_allclose(row.sum(), 1.0, atol=1e-5)
        others = [j for j in np.nonzero(row > 0)[0] if j != i]
        assert len(others) <= 1
        weights.append(row[i])
        partner.append(others[0] if others else i)
    return np.array(weights), np.array(partner)


def test_mixup_mixes_images_and_labels_with_the_same_weight():
    batch = np.stack([image(s) for s in range(8)])
    pipeline = A.Pipeline([A.MixUp(alpha=0.4, probability=0.75)], num_classes=8)
    out, soft = run(pipeline, key(5), batch, np.arange(8))
    assert soft.shape == (8, 8) and soft.dtype == np.float32
    w, j = partners(soft)
    assert ((w > 0.01) & (w < 0.99)).any()
    expected = w[:, None, None, None] * batch + (1 - w[:, None, None, None]) * batch[j]
    np.testing.assert_allclose(out, expected, atol=1e-3)
    with pytest.raises(ValueError, match="num_classes"):
        A.Pipeline([A.MixUp()])(key(), batch, np.arange(8))


def test_cutmix_label_weights_equal_the_pasted_pixel_share():
    batch = np.stack([np.full((H, W, 3), i + 1.0, np.float32) for i in range(8)])
    pipeline = A.Pipeline([A.CutMix()])                   # one-hot float labels: no num_classes
    mixed = 0
    for seed in range(3):
        out, soft = run(pipeline, key(seed), batch, np.eye(8, dtype=np.float32))
        w, j = partners(soft)
        for i in range(8):
            pasted = out[i, ..., 0] == j[i] + 1
            assert np.isin(out[i], [i + 1, j[i] + 1]).all()
            if j[i] != i:
                np.testing.assert_allclose(1 - w[i], pasted.mean(), atol=1e-6)
            if 0 < pasted.mean() < 1:
                rows, cols = np.nonzero(pasted)
                assert pasted.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)   # a rectangle
                mixed += 1
    assert mixed > 0


def test_random_crop_windows_and_evaluation_resize():
    batch = same_batch(N)
    out, _ = run(A.Pipeline([CROP]), key(0), batch)
    windows = {(t, l): batch[0, t:t + 6, l:l + 5] for t in range(3) for l in range(4)}
    found = {next(s for s, w in windows.items() if np.array_equal(o, w)) for o in out}
    assert len(found) > 1
    batch = np.stack([image(0, shape=(8, 10, 3))] * 2)
    center, _ = run(A.Pipeline([A.RandomCrop(8, 6)]), key(0), batch, training=False)
    np.testing.assert_array_equal(center, batch[:, :, 2:8])              # largest 8x6 window
    resized, _ = run(A.Pipeline([A.RandomCrop(4, 4)]), key(0), batch, training=False)
    expected = jax.image.resize(batch[:, :, 1:9], (2, 4, 4, 3), "bilinear", antialias=False)
    np.testing.assert_allclose(resized, expected, atol=1e-4)             # 8x8 centre, resized
    small, _ = run(A.Pipeline([A.RandomCrop(8, 6)]), key(0), batch)      # not larger: as eval
    np.testing.assert_array_equal(small, center)


def test_probability_applies_per_example():
    batch = same_batch(N, low=80, high=170)
    out, _ = run(A.Pipeline([BRIGHTNESS]), key(0), batch)            # probability 0.5
    changed = [not np.array_equal(o, batch[0]) for o in out]
    assert 0 < sum(changed) < N


def test_config_round_trip_and_errors():
    config = [{"op": "RandomFlip", "mode": "horizontal"},
              {"op": "RandomRotation", "factor": [-0.1, 0.2], "probability": 0.5},
              {"op": "RandomCrop", "height": 6, "width": 6},
              {"op": "RandomErasing", "scale": [0.1, 0.2], "fill_value": [1, 2, 3]},
              {"op": "CutMix", "factor": 0.5}]
    pipeline = A.Pipeline.from_config(config, num_classes=10)
    assert pipeline.ops[1] == A.RandomRotation((-0.1, 0.2), probability=0.5)
    assert A.Pipeline.from_config(pipeline.to_config(), num_classes=10) == pipeline
    assert pipeline.to_config()[0] == {"op": "RandomFlip", "mode": "horizontal", "probability": 1.0}
    assert pipeline.mixes_labels and not A.Pipeline(pipeline.ops[:2]).mixes_labels
    with pytest.raises(ValueError, match=r"Unknown augmentation op 'RandomFlipp'.*RandomFlip.*"
                                         r"Valid names:.*MixUp"):
        A.Pipeline.from_config([{"op": "RandomFlipp"}])
    with pytest.raises(ValueError, match=r"argument of RandomRotation 'fill'.*fill_mode.*factor"):
        A.Pipeline.from_config([{"op": "RandomRotation", "factor": 0.1, "fill": "constant"}])
    with pytest.raises(ValueError, match="no 'op' key"):
        A.Pipeline.from_config([{"mode": "horizontal"}])
    with pytest.raises(ValueError, match="must come last"):
        A.Pipeline([A.MixUp(), A.RandomFlip()])
    with pytest.raises(ValueError, match="factor"):
        A.RandomRotation(1.5)
    with pytest.raises(ValueError, match="height_factor"):
        A.RandomZoom(-1.0)
    with pytest.raises(ValueError, match="fill_mode"):
        A.RandomTranslation(0.1, 0.1, fill_mode="mirror")
    with pytest.raises(ValueError, match="probability"):
        A.RandomFlip(probability=1.5)
    with pytest.raises(ValueError, match="mode"):
        A.RandomFlip("diagonal")


def test_pipeline_jits_once_for_new_keys():
    traces = []
    pipeline = A.Pipeline([A.RandomFlip(), A.RandomTranslation(0.1, 0.1)])

    @jax.jit
    def step(k, x):
        traces.append(1)
        return pipeline(k, x)[0]

    batch = same_batch(4)
    outs = [np.asarray(step(key(s), batch)) for s in range(3)]
    assert len(traces) == 1 and not np.array_equal(outs[0], outs[1])


def test_preview_grid_writes_a_png(tmp_path):
    from PIL import Image

    batch = np.stack([image(s, shape=(H, W, 1)) for s in range(3)])
    path = A.preview_grid(A.Pipeline([A.RandomFlip()]), batch, key(), n_rows=2,
                          path=tmp_path / "sub" / "grid.png", n_augmented=3)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size[0] > png.size[1] > 0
    with pytest.raises(ValueError, match="n_rows"):
        A.preview_grid(A.Pipeline([A.RandomFlip()]), batch, key(), n_rows=4, path=tmp_path / "x")


def saved_figures(monkeypatch) -> list:
    """The matplotlib figures saved from now on (each still saved as usual)."""
    from matplotlib.figure import Figure

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k))[1])
    return figures


def test_preview_grid_is_titled_with_its_ops_and_replaces_the_file_atomically(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    pipeline = A.Pipeline([A.RandomRotation(0.1), A.RandomTranslation(0.125, 0.125, fill_mode="constant"),
                           A.RandomFlip()])
    assert [A.preview.op_label(op) for op in pipeline.ops] == [
        "RandomRotation(factor=0.1)", "RandomTranslation(height_factor=0.125, width_factor=0.125, "
        "fill_mode='constant')", "RandomFlip()"]   # arguments at their defaults are left out
    path = tmp_path / "grid.png"
    path.write_text("old")
    batch = np.stack([image(s, shape=(H, W, 1)) for s in range(2)])
    assert A.preview_grid(pipeline, batch, key(), path, n_rows=2, n_augmented=2) == path
    title = " ".join(figures[-1].get_suptitle().split())
    assert title == ("augmentation: RandomRotation(factor=0.1) → RandomTranslation(height_factor=0.125, "
                     "width_factor=0.125, fill_mode='constant') → RandomFlip()")
    assert path.read_bytes().startswith(b"\x89PNG") and os.listdir(tmp_path) == ["grid.png"]  # no temp file left


def test_augment_preview_writes_into_the_configs_run_directory(tmp_path, monkeypatch, digits_tfds_dir, capsys):
    """Not into the current directory: ``runs/<config stem>/`` as ``fluxnet train`` uses, or ``--workdir``."""
    from pathlib import Path

    from fluxnet import cli

    config = str(Path(__file__).resolve().parent.parent / "configs" / "digits_cnn.py")
    args = ["augment-preview", config, f"data.data_dir={digits_tfds_dir}", "augment=({'op': 'RandomFlip'},)"]
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 0
    assert capsys.readouterr().out.strip() == str(Path("runs") / "digits_cnn" / "augment_preview.png")
    assert os.listdir(tmp_path) == ["runs"] and os.listdir(tmp_path / "runs" / "digits_cnn") == ["augment_preview.png"]
    assert cli.main([*args, "--workdir", str(tmp_path / "a" / "b")]) == 0
    assert (tmp_path / "a" / "b" / "augment_preview.png").is_file()


def test_ops_match_keras_names_and_fixed_factor_outputs():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras runs on another backend")

    def keras_layer(op):          # our arguments are Keras' arguments (probability is ours)
        config = op.to_config()
        del config["probability"]
        return getattr(keras.layers, config.pop("op"))(**config)

    for op in [op for op in RANDOM_OPS if op is not PAD_CROP] + [A.MixUp(0.3), A.CutMix(0.5)]:
        keras_layer(op)
    x = image(2)
    cases = [translation(mode) for mode in NUMPY_PAD_MODES] + [       # integer shifts (compiled
        A.RandomZoom((0.3, 0.3), (-0.2, -0.2), fill_mode="constant", fill_value=9.0),  # above),
        A.RandomRotation((0.1, 0.1), fill_mode="reflect")]            # fractional, bilinear
    for op in cases:
        theirs = np.asarray(keras_layer(op)(x[None], training=True))[0]
        np.testing.assert_allclose(call(op, key(), x), theirs, rtol=0, atol=1e-3, err_msg=repr(op))
    flipped = np.asarray(keras.layers.RandomFlip("horizontal")(same_batch(4), training=True))
    assert all(np.array_equal(f, x) or np.array_equal(f, x[:, ::-1])
               for f, x in zip(flipped, same_batch(4)))
    y = image(0, shape=(8, 10, 3))[None]
    expected = keras.ops.image.resize(y, (9, 7), crop_to_aspect_ratio=True)   # Keras' documented
    ours, _ = run(A.Pipeline([A.RandomCrop(9, 7)]), key(), y, training=False)  # RandomCrop eval
    np.testing.assert_allclose(ours, np.asarray(expected), atol=1e-3)
