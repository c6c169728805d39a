"""docs/guide.md runs as written: its Python blocks in order in one namespace, its shell blocks'
``fluxnet`` commands through the command line (offline, on the bundled digits, in a temporary folder)."""
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "guide.md").read_text()


def test_every_block_of_the_guide_runs(tmp_path, monkeypatch, digits_tfds_dir, capsys):
    from fluxnet import cli

    monkeypatch.setenv("TFDS_DATA_DIR", str(digits_tfds_dir))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    blocks = re.findall(r"```(python|bash)\n(.*?)```", GUIDE, re.S)
    assert [kind for kind, _ in blocks].count("python") >= 7 and any(kind == "bash" for kind, _ in blocks)
    namespace = {"__name__": "guide"}
    for kind, code in blocks:
        if kind == "python":
            exec(compile(code, "docs/guide.md", "exec"), namespace)
            continue
        for line in code.strip().splitlines():
            command = shlex.split(line)
            assert command[0] == "fluxnet" and cli.main([*command[1:], "--quiet"]) == 0, line
    out = capsys.readouterr().out
    assert "Total params" in out and "accuracy" in out


def test_the_readme_links_the_guide():
    assert "docs/guide.md" in (ROOT / "README.md").read_text()
