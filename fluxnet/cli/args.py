"""Arguments several commands share."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_config(p: argparse.ArgumentParser) -> None:
    """``CONFIG [key=value ...]``: a file in ``configs/`` and dotted overrides."""
    p.add_argument("config", help="a config file defining get_config()")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")


def default_workdir(config_path: str) -> str:
    """``runs/<config stem>`` under the current directory."""
    return str(Path("runs") / Path(config_path).stem)
