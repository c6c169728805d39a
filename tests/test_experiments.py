"""Every study in ``experiments/`` runs end to end in its ``--quick`` mode and writes its results
(``.json`` with the revision and command, ``.md`` table, ``.png`` plot): ``make test-slow`` (5-30 s
each in a loaded suite). The default suite loads every study and parses its arguments."""
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
STUDIES = sorted(p.stem for p in EXPERIMENTS.glob("*.py") if p.stem != "common")


def load(name: str):
    sys.path.insert(0, str(EXPERIMENTS))  # studies import common.py beside them, as when run as scripts
    try:
        spec = importlib.util.spec_from_file_location(f"study_{name}", EXPERIMENTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXPERIMENTS))


@pytest.mark.parametrize("name", STUDIES)
def test_study_loads_and_parses_its_arguments(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        load(name).main(["--help"])
    assert exit_.value.code == 0 and "--quick" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_study_runs_quick_and_writes_its_results(name, tmp_path, digits_tfds_dir):
    load(name).main(["--quick", "--out", str(tmp_path), "--data-dir", str(digits_tfds_dir)])
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["study"] == name and record["quick"] and record["results"]
    assert record["command"].startswith(f"python experiments/{name}.py --quick")
    assert re.search(r"^\|.+\|$", (tmp_path / f"{name}.md").read_text(), re.M)  # a Markdown table
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
