"""Populations: members trained together as one vmapped program equal the same runs trained alone
(seeds, folds of unequal size with partial and missing batches, learning rates; BatchNormalization
and Dropout), validate on their own rows, and leave the caller's states valid."""
import jax
import numpy as np
import optax
import pytest

import fluxnet as fx
from fluxnet.models.builders import build_model
from fluxnet.train import lr_scale
from fluxnet.train.population import Member, Population, member

LOSS = fx.losses.get("sparse_categorical_crossentropy", from_logits=True)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 200)
    trainer = fx.Trainer(build_model("cnn", (8, 8, 1), 10, filters=(8,), dense_units=16, dropout=0.2), loss=LOSS,
                         optimizer=optax.adam(3e-3), metrics=["accuracy"])
    return trainer, x, y


def alone(trainer, m: Member, x, y, epochs, validation):
    state = trainer.init(jax.random.key(m.seed))
    if m.learning_rate is not None:
        state = lr_scale.set_learning_rate(state, m.learning_rate, "test")
    rows = np.arange(len(x)) if m.train_rows is None else m.train_rows
    return trainer.fit(state, (x[rows], y[rows]), epochs=epochs, batch_size=32, validation_data=validation, verbose=0)


def test_members_equal_the_same_runs_trained_alone(setup):
    trainer, x, y = setup
    members = [Member(seed=0),                                            # 200 rows: 7 steps, the last partial
               Member(seed=1, train_rows=np.arange(0, 150)),              # 5 steps: masked out of the last two
               Member(seed=2, train_rows=np.arange(37, 200), learning_rate=1e-3)]
    validation = (x[:40], y[:40])
    states, histories = Population(trainer).fit(members, (x, y), epochs=2, batch_size=32, validation_data=validation)
    for i, m in enumerate(members):
        state, history = alone(trainer, m, x, y, 2, validation)
        assert int(member(states, i).step) == int(state.step)              # no update in a missing step
        assert set(histories[i].history) == set(history.history)
        for key, values in history.history.items():
            np.testing.assert_allclose(histories[i].history[key], values, rtol=1e-5, atol=1e-7, err_msg=key)
        for a, b in zip(jax.tree.leaves(member(states, i).variables), jax.tree.leaves(state.variables)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(histories[2].history["learning_rate"], [1e-3, 1e-3], rtol=1e-6)


def test_folds_validate_on_their_own_rows_and_states_continue(setup):
    trainer, x, y = setup
    folds = np.array_split(np.random.default_rng(1).permutation(len(x)), 3)
    members = [Member(seed=0, train_rows=np.concatenate([f for j, f in enumerate(folds) if j != k]),
                      validation_rows=folds[k]) for k in range(3)]
    population = Population(trainer)
    states, first = population.fit(members, (x, y), epochs=1, batch_size=32)
    again, second = population.fit(members, (x, y), epochs=1, batch_size=32, states=states)
    assert int(np.asarray(again.epoch).max()) == 2
    _ = jax.device_get(states)  # the caller's states stay readable (the steps donate a copy)
    for k, m in enumerate(members):
        state, history = alone(trainer, m, x, y, 2, (x[m.validation_rows], y[m.validation_rows]))
        np.testing.assert_allclose(first[k].history["val_loss"] + second[k].history["val_loss"],
                                   history.history["val_loss"], rtol=1e-5)


def test_bad_members_are_named(setup):
    trainer, x, y = setup
    population = Population(trainer)
    with pytest.raises(ValueError, match="train_rows must lie in \\[0, 200\\)"):
        population.fit([Member(train_rows=np.arange(190, 210))], (x, y))
    with pytest.raises(ValueError, match="validation_rows, or none"):
        population.fit([Member(validation_rows=np.arange(5)), Member()], (x, y))
    with pytest.raises(ValueError, match="at least batch_size training rows"):
        population.fit([Member(), Member(train_rows=np.arange(10))], (x, y), batch_size=32)


def test_continued_states_are_checked(setup):
    trainer, x, y = setup
    population = Population(trainer)
    ahead, _ = trainer.fit(trainer.init(jax.random.key(0)), (x, y), epochs=1, verbose=0)
    from fluxnet.train.population import stack
    with pytest.raises(ValueError, match="stacked states of 3 members"):
        population.fit([Member(0), Member(1), Member(2)], (x, y), states=stack([ahead, ahead]))
    with pytest.raises(TypeError, match="list of population.Member"):
        population.fit([0, 1], (x, y))
    with pytest.raises(ValueError, match="fit needs targets"):
        population.fit([Member()], (x, None))
    population.fit([Member(0), Member(1)], (x, y), batch_size=32)
    population.fit([Member(0), Member(1)], (x, y), states=stack([ahead, ahead]), batch_size=32)
    assert population.train_step._cache_size() == 1      # states from Trainer.fit: the same placement as init's


def test_members_at_different_epochs_each_train_their_own_next_epoch(setup):
    trainer, x, y = setup
    ahead, _ = trainer.fit(trainer.init(jax.random.key(0)), (x, y), epochs=1, batch_size=32, verbose=0)
    behind = trainer.init(jax.random.key(1))
    from fluxnet.train.population import stack
    states, histories = Population(trainer).fit([Member(0), Member(1)], (x, y), batch_size=32, until=2,
                                                states=stack([ahead, behind]))
    assert np.asarray(states.epoch).tolist() == [2, 2]
    assert [len(h.history["loss"]) for h in histories] == [1, 2]          # to epoch 2 from where each was
    for start, history in ((ahead, histories[0]), (behind, histories[1])):
        _, alone_history = trainer.fit(start, (x, y), epochs=2 - int(start.epoch), batch_size=32, verbose=0)
        np.testing.assert_allclose(history.history["loss"], alone_history.history["loss"], rtol=1e-5)


def test_a_member_that_stops_early_sits_out_while_the_others_go_on(setup, tmp_path):
    trainer, x, y = setup
    stop_after_two = lambda: fx.train.EarlyStopping(monitor="loss", min_delta=10.0, patience=0)  # noqa: E731
    members = [Member(seed=0), Member(seed=1)]
    states, histories = Population(trainer).fit(members, (x, y), epochs=4, batch_size=32,
                                                callbacks=[[stop_after_two()], []])
    assert histories[0].epoch == [0, 1] and histories[1].epoch == [0, 1, 2, 3]
    for i, (m, cbs) in enumerate(zip(members, [[stop_after_two()], []])):
        state, history = trainer.fit(trainer.init(jax.random.key(m.seed)), (x, y), epochs=4, batch_size=32,
                                     callbacks=cbs, verbose=0)
        assert int(member(states, i).step) == int(state.step) and int(member(states, i).epoch) == int(state.epoch)
        np.testing.assert_allclose(histories[i].history["loss"], history.history["loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="BackupAndRestore"):
        Population(trainer).fit(members, (x, y), callbacks=[[fx.callbacks.BackupAndRestore(tmp_path / "backup")], []])


@pytest.mark.slow  # eight epochs; test_members_equal_the_same_runs_trained_alone is the default suite's check
@pytest.mark.parametrize("kind", ["folds", "learning_rates"])
def test_eight_epochs_with_batch_norm_and_dropout_stay_within_the_stated_tolerances(kind):
    """The issue's bar: first epoch within rtol 1e-6, eight epochs at lr <= 3e-3 within 1e-4 on val_loss
    and one example on val_accuracy, with BatchNormalization and Dropout (digits, 3 folds / 3 rates)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold

    digits = load_digits()
    x, y = (digits.images[..., None] / 16).astype("float32"), digits.target
    trainer = fx.Trainer(build_model("cnn", (8, 8, 1), 10, filters=(8, 16), dense_units=32, dropout=0.3,
                                     batch_norm=True), loss=LOSS, optimizer="adam", metrics=["accuracy"])
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(x, y))
    if kind == "folds":
        members = [Member(seed=0, train_rows=tr, validation_rows=va) for tr, va in folds]
    else:
        members = [Member(seed=0, train_rows=folds[0][0], validation_rows=folds[0][1], learning_rate=lr)
                   for lr in (3e-4, 1e-3, 3e-3)]
    _, histories = Population(trainer).fit(members, (x, y), epochs=8, batch_size=32)
    for m, together in zip(members, histories):
        _, history = alone(trainer, m, x, y, 8, (x[m.validation_rows], y[m.validation_rows]))
        np.testing.assert_allclose(together.history["loss"][0], history.history["loss"][0], rtol=1e-6)
        np.testing.assert_allclose(together.history["val_loss"], history.history["val_loss"], rtol=1e-4)
        gap = np.abs(np.subtract(together.history["val_accuracy"], history.history["val_accuracy"]))
        assert gap.max() * len(m.validation_rows) <= 1 + 1e-9
