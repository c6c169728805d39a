# Two commands do all the set-up (README "Quick start"): each builds .venv from pyproject.toml if needed.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: train test test-slow benchmark experiments

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)  ## the main job: the digits CNN, offline, into runs/digits_cnn
	$(VENV)/bin/fluxnet train configs/digits_cnn.py $(ARGS)

test: $(STAMP)  ## the layering contracts, the linter, then the test suite except the slow ones (two workers)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check fluxnet tests benchmarks experiments configs
	$(VENV)/bin/python -m pytest -n 2 --dist worksteal $(ARGS)

test-slow: $(STAMP)  ## only the slow tests (-m slow: Keras applications built and compared), two workers
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile -m slow $(ARGS)

benchmark: $(STAMP)  ## fluxnet Trainer vs a hand-written flax+optax loop
	$(VENV)/bin/python benchmarks/train_throughput.py $(ARGS)

experiments: $(STAMP)  ## every study in experiments/, full size, into experiments/results (each aims at 5 min)
	for study in $(filter-out experiments/common.py,$(wildcard experiments/*.py)); do \
	  $(VENV)/bin/python $$study $(ARGS) || exit 1; done
