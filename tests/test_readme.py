"""The README's promises: its Quick start block holds exactly the two set-up commands, and every Python
example in it runs as written."""
import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_quick_start_block_has_the_two_commands():
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.S).group(1)
    assert block.strip().splitlines() == ["make train", "make test"]
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert "configs/digits_cnn.py" in makefile.split("\ntrain:", 1)[1].split("\n\n", 1)[0]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_python_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "accuracy" in out and "Total params" in out
