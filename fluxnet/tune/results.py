"""What an experiment directory reports, rewritten atomically from the study by every worker:
``results.csv`` (a row per trial), ``results.md`` (the leaderboard), ``best.json`` and ``best_config.py``
(a config file ``fluxnet train`` accepts), and plots (the metric against each swept key; for a search,
Optuna's optimisation history and parameter importances). Floats are written with full precision."""
from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import optuna

from fluxnet.files import write_atomic
from fluxnet.runs.config import to_json
from fluxnet.runs.plots import pyplot
from fluxnet.tune import space as spaces
from fluxnet.tune.study import ERROR, SURPLUS, Experiment
from fluxnet.tune.trial import TrialOutcome

RESULTS_CSV, RESULTS_MD, BEST_JSON, BEST_CONFIG = "results.csv", "results.md", "best.json", "best_config.py"
STATES = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
          optuna.trial.TrialState.FAIL: "failed", optuna.trial.TrialState.RUNNING: "running"}


def rows(exp: Experiment, study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial that is a result (surplus and still-queued trials are not)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS) or t.state not in STATES:
            continue
        outcome = TrialOutcome.read(exp.trial_dir(t.number))
        row = {"trial": t.number, **{k: t.params.get(k) for k in exp.space}, "state": STATES[t.state]}
        row.update(outcome.validation if outcome else {})
        row.update({"epochs": outcome.epochs if outcome else None, "seconds": outcome.seconds if outcome else None,
                    "error": t.user_attrs.get(ERROR)})
        out.append(row)
    return out


def _cell(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def best_row(exp: Experiment, table: list[dict]) -> dict | None:
    done = [r for r in table if r["state"] == "complete" and isinstance(r.get(exp.metric), float)
            and math.isfinite(r[exp.metric])]
    sign = 1 if exp.direction == "maximize" else -1
    return max(done, key=lambda r: (sign * r[exp.metric], -r["trial"])) if done else None


def write(exp: Experiment, study: optuna.Study, test: dict | None = None, search: bool = False,
          plots: bool = True) -> dict | None:
    """Rewrite every report file from the study; returns ``best.json``'s content (None before any
    trial completed). ``test``: the best trial's test metrics, once the experiment has finished (kept
    from the previous ``best.json`` while the best trial stays the same);
    ``search``: add Optuna's plots (a search, not a sweep); ``plots=False``: the tables and files only
    (the plots take most of the time: ~0.8 s against milliseconds)."""
    table = rows(exp, study)
    metrics = sorted({k for r in table for k in r if k.startswith("val_")})
    columns = ["trial", *exp.space, "state", *metrics, "epochs", "seconds", "error"]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: _cell(r.get(c)) for c in columns} for r in table)
    write_atomic(exp.workdir / RESULTS_CSV, text.getvalue())
    best = best_row(exp, table)
    write_atomic(exp.workdir / RESULTS_MD, leaderboard(exp, table))
    if best is None:
        return None
    params = {k: best[k] for k in exp.space}
    if test is None and (exp.workdir / BEST_JSON).exists():  # the test metrics of an unchanged best stay
        previous = json.loads((exp.workdir / BEST_JSON).read_text())
        test = previous.get("test") if previous.get("trial") == best["trial"] else None
    config = to_json(spaces.with_params(exp.config, params))
    content = {"trial": best["trial"], "params": params, "value": best[exp.metric], "metric": exp.metric,
               "config": config, "test": test}
    write_atomic(exp.workdir / BEST_JSON, json.dumps(content, indent=1))
    write_atomic(exp.workdir / BEST_CONFIG, best_config_file(exp, best["trial"], config))
    if plots:
        _plots(exp, study, table, search)
    return content


def leaderboard(exp: Experiment, table: list[dict]) -> str:
    """A Markdown table of the trials, best first (then pruned, running, failed)."""
    sign = -1 if exp.direction == "maximize" else 1
    order = {"complete": 0, "pruned": 1, "running": 2, "failed": 3}
    ranked = sorted(table, key=lambda r: (order[r["state"]], sign * (r.get(exp.metric) or 0.0), r["trial"]))
    head = ["trial", *exp.space, "state", exp.metric, "epochs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in head) + " |" for r in ranked]
    return f"# {exp.workdir.name}: {exp.metric} ({exp.direction})\n\n" + "\n".join(lines) + "\n"


def best_config_file(exp: Experiment, trial: int, config: dict) -> str:
    return (f'"""The best trial ({trial}) of {exp.workdir}: its full config.\n\n'
            f'    fluxnet train {exp.workdir / BEST_CONFIG}\n"""\nimport json\n\n'
            "from ml_collections import ConfigDict\n\n"
            f"CONFIG = json.loads({json.dumps(json.dumps(config, indent=1, sort_keys=True))})\n\n\n"
            "def get_config() -> ConfigDict:\n    return ConfigDict(CONFIG)\n")


def _plots(exp: Experiment, study: optuna.Study, table: list[dict], search: bool) -> None:
    plt = pyplot()
    done = [r for r in table if r["state"] == "complete"]
    keys = list(exp.space)
    with plt.style.context("default"):
        fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8), squeeze=False)
        for ax, key in zip(axes[0], keys):
            xs = [r[key] for r in done]
            numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
            log = exp.space[key].kind == "loguniform"  # log10 on a plain axis: readable ticks at any range
            ax.scatter([math.log10(x) for x in xs] if log else xs if numeric else [str(x) for x in xs],
                       [r[exp.metric] for r in done])
            ax.set_xlabel(f"log10 {key}" if log else key)
            ax.set_ylabel(exp.metric)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{exp.workdir.name}: {exp.metric} of the {len(done)} complete trials")
        fig.tight_layout()
        fig.savefig(exp.workdir / f"{exp.metric}_by_key.png", dpi=100)
        plt.close(fig)
    if search and len(done) >= 2:
        _optuna_plot(optuna.visualization.matplotlib.plot_optimization_history, study, exp.workdir / "history.png")
        if len(keys) > 1:
            _optuna_plot(optuna.visualization.matplotlib.plot_param_importances, study,
                         exp.workdir / "importances.png")


def _optuna_plot(plot, study: optuna.Study, path: Path) -> None:
    plt = pyplot()
    # Optuna's plots switch the global style (ggplot): keep that inside; quiet e.g. "importances will be
    # equal", which a handful of trials gives
    with warnings.catch_warnings(), plt.style.context("default"):
        warnings.simplefilter("ignore")
        ax = plot(study)
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=100)
        plt.close(ax.figure)
