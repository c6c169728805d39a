"""The report of a finished run: test metrics (of the final and the best checkpoint), the baselines it
must beat, plots and ``summary.json`` with library versions and the git revision. This is the only
place a run reads its test split. On streamed data the baselines fit and score seeded samples
(``build.in_memory``)."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping

from ml_collections import ConfigDict

from fluxnet.files import write_atomic
from fluxnet.runs.baselines import baselines
from fluxnet.runs.build import in_memory, model_inputs
from fluxnet.runs.fit import FitResult
from fluxnet.runs.plots import confusion_matrix_plot, training_curves
from fluxnet.runs.workdir import SUMMARY_FILE, open_checkpoints, restore, restore_step

PACKAGES = ("fluxnet", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "numpy")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_revision() -> str | None:
    """The project's git commit (with ``-dirty`` for uncommitted changes), or None outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_report(config: ConfigDict, workdir: str | os.PathLike, fit: FitResult, splits: Any, *, verbose: int = 1,
                 extra_summary: Mapping | None = None) -> dict:
    """Evaluate ``fit``'s final state and the run's best checkpoint on the test split, compare with the
    baselines, write the plots (unless ``train.plots`` is False) and ``summary.json`` (atomically);
    returns the summary."""
    workdir = Path(workdir)
    trainer, state, train, test = fit.trainer, fit.state, splits.train, splits.test
    base = baselines(*in_memory(train, config.seed), *in_memory(test, config.seed), seed=config.seed)
    test_metrics = trainer.evaluate(state, test, batch_size=256)
    checkpoints = open_checkpoints(config, workdir)
    best_step, best = checkpoints.best_step(), None
    restored = None if best_step is None else restore_step(checkpoints, lambda s: restore(trainer, checkpoints, s),
                                                           best_step)
    if restored is not None:  # (a damaged best checkpoint: noted, and no best_checkpoint in the summary)
        best = {"epoch": best_step, "monitor": checkpoints.monitor,
                "test": trainer.evaluate(restored[0], test, batch_size=256)}
    checkpoints.close()
    if verbose:
        print(f"Baselines on the test split: majority {base['majority']:.4f}, "
              f"logistic regression {base['logistic_regression']:.4f}")
        print("Test: " + " - ".join(f"{k}: {v:.4f}" for k, v in test_metrics.items())
              + f" (baseline accuracy {base['accuracy']:.4f})")
    if config.train.get("plots", True) is not False:
        if fit.history.history:
            training_curves(fit.history.history, str(workdir / "curves.png"), best_epoch=best and best["epoch"])
        predictions = trainer.predict(state, model_inputs(test)).argmax(-1)
        confusion_matrix_plot(test.labels, predictions, splits.metadata.class_names,
                              str(workdir / "confusion_matrix.png"), title=f"{splits.metadata.name}, test split")
    counts = trainer.model.param_counts()
    validation = splits.validation
    summary = {"test": test_metrics, "baseline": base, "epochs_completed": int(state.epoch),
               "steps": int(state.step), "best_checkpoint": best, "history": fit.history.history,
               "trainable_params": counts["trainable"], "non_trainable_params": counts["non_trainable"],
               "data": {"name": splits.metadata.name, "train": len(train),
                        "validation": len(validation) if validation else 0, "test": len(test)},
               "versions": versions(), "git_revision": git_revision(), "devices": len(trainer.mesh.devices.ravel()),
               **(extra_summary or {})}
    write_atomic(workdir / SUMMARY_FILE, json.dumps(summary, indent=1))
    return summary
