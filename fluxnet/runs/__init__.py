"""The application layer: run directories from configs. It imports the library; the library never
imports it.

    config (load, override, diff) -> build (data, model, trainer) -> fit (train + validation, never
    test) -> report (test, baselines, plots, summary.json); workdir (check, resume, load_run,
    evaluate); lock (one writer per workdir); jobs (train / pretrain / transfer).
"""
from fluxnet.runs.config import resolve_config
from fluxnet.runs.fit import FitResult, fit_run
from fluxnet.runs.jobs import baseline_report, pretrain, train, transfer
from fluxnet.runs.lock import RunLock
from fluxnet.runs.report import write_report
from fluxnet.runs.workdir import evaluate_run, load_run

__all__ = ["FitResult", "RunLock", "baseline_report", "evaluate_run", "fit_run", "load_run", "pretrain",
           "resolve_config", "train", "transfer", "write_report"]
