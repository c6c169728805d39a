"""Reliability, signals: SIGTERM (a cluster preempting the job) and SIGINT (Ctrl-C) stop a run at the
next step with one line, the last epoch's checkpoint complete, exit 143 / 130; resuming repeats an
uninterrupted run exactly. A signal between phases leaves nothing half-written."""
import signal

import jax
import pytest

import fluxnet as fx
from fluxnet import runs
from fluxnet.errors import TrainingInterrupted
from fluxnet.runs.signals import StopSignals
from fluxnet.train.checkpoint import Checkpointer
from runs_support import CONFIG, assert_same_run, finish, fluxnet_process, overrides, start_until


def test_sigterm_mid_epoch_saves_exits_143_and_the_resume_is_exact(straight, tmp_path, digits_tfds_dir):
    workdir = tmp_path / "preempted"
    args = ["train", CONFIG, *overrides(digits_tfds_dir), "--workdir", str(workdir), "--quiet"]
    proc = fluxnet_process(args, crash_at="sigterm:3")
    err = proc.stderr.strip()
    assert proc.returncode == 143, err[-3000:]
    assert err.splitlines() == [err] and "Traceback" not in err        # one line, also under --quiet
    assert f"Training stopped by SIGTERM in epoch 3 (epoch 2 was the last one completed). {workdir} is saved" in err
    checkpoints = Checkpointer(workdir / "checkpoints", read_only=True)
    assert checkpoints.latest_step() == 2
    checkpoints.close()
    assert not (workdir / "summary.json").exists()
    assert fluxnet_process(args).returncode == 0
    assert_same_run(workdir, straight[0])


def test_sigint_during_training_exits_130_with_one_line(tmp_path, digits_tfds_dir):
    workdir = tmp_path / "interrupted"
    args = ["train", CONFIG, *overrides(digits_tfds_dir, 100_000, "train.early_stopping=None"), "--workdir",
            str(workdir), "--quiet"]  # runs until it is stopped
    proc = start_until(args, workdir / "metrics.jsonl")
    proc.send_signal(signal.SIGINT)
    err = finish(proc, timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert len(err.strip().splitlines()) == 1 and "Training stopped by SIGINT in epoch" in err
    assert not list((workdir / "checkpoints").glob("*tmp*"))            # no half-written checkpoint
    assert fx.load_run(workdir)[0].count_params() > 0                   # the saved state loads


def test_a_signal_before_training_writes_nothing(tmp_path, digits_tfds_dir):
    stop = StopSignals()
    stop.received = signal.SIGTERM
    config = runs.resolve_config(CONFIG, overrides(digits_tfds_dir, 2))
    with pytest.raises(TrainingInterrupted, match="Stopped by SIGTERM; .* was not changed") as err:
        runs.train(config, tmp_path / "never", verbose=0, should_stop=stop)
    assert err.value.exit_code == 143 and not (tmp_path / "never").exists()


def test_a_signal_after_training_leaves_the_report_for_the_rerun(straight, tmp_path, digits_tfds_dir,
                                                                  monkeypatch):
    stop = StopSignals()
    fit_run = runs.jobs.fit_run

    def fit_then_signal(*args, **kwargs):
        result = fit_run(*args, **kwargs)
        stop.received = signal.SIGINT                                    # arrives once training is done
        return result

    monkeypatch.setattr(runs.jobs, "fit_run", fit_then_signal)
    workdir = tmp_path / "late"
    config = runs.resolve_config(CONFIG, overrides(digits_tfds_dir))
    with pytest.raises(TrainingInterrupted, match="training is complete and saved") as err:
        runs.train(config, workdir, verbose=0, should_stop=stop)
    assert err.value.exit_code == 130 and not (workdir / "summary.json").exists()
    monkeypatch.undo()
    runs.train(config, workdir, verbose=0)
    assert_same_run(workdir, straight[0])


def test_stop_signals_install_and_restore_the_handlers(monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert signal.getsignal(signal.SIGTERM) != before
        assert stop(0) is None
        signal.raise_signal(signal.SIGTERM)                              # recorded, not fatal
        assert stop(0) == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
    signal.signal(signal.SIGINT, signal.SIG_IGN)                         # ignored by the parent (cmd &)
    try:
        with StopSignals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(jax, "process_count", lambda: 2)                 # under jax.distributed: JAX's own
    with StopSignals():
        assert signal.getsignal(signal.SIGTERM) == before


def test_trainer_should_stop_ends_fit_at_that_step(digits_splits):
    model = fx.Sequential([fx.layers.Input((8, 8, 1)), fx.layers.Flatten(), fx.layers.Dense(10)])
    trainer = fx.Trainer(model, loss=fx.losses.get("sparse_categorical_crossentropy", from_logits=True))
    asked = []

    def should_stop(step):
        asked.append(step)
        return "a test" if step >= 5 else None

    with pytest.raises(TrainingInterrupted, match="stopped by a test in epoch 1") as err:
        trainer.fit(trainer.init(jax.random.key(0)), digits_splits.train, epochs=2, verbose=0,
                    should_stop=should_stop)
    assert asked == [1, 2, 3, 4, 5] and err.value.exit_code == 1
