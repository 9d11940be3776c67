"""The README's command blocks work as written in a shell after the Quick start (.venv activated): each
`hf-gaf ...` and `python recipes/...` command, run with `--help`, parses. Its links to files exist."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    """Every command of the README's bash blocks (continuation lines joined), variables left as written."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(("hf-gaf ", "python recipes/")):
                commands.append(line)
    return commands


def test_the_readme_has_commands_and_links_that_exist():
    assert len(readme_commands()) >= 5
    for target in re.findall(r"\]\(((?!http|#)[^)]+)\)", README):
        assert (ROOT / target).exists(), target


def help_of(argv: list[str]) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([*argv, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow  # a fresh interpreter per command (about 10 s each); `make test-all`
@pytest.mark.parametrize("command", readme_commands())
def test_each_readme_command_parses_as_written(command):
    """Its program runs (``--help``, from a shell whose PATH starts with the venv) and lists every flag given;
    the flags after ``--`` of compare and sweep are checked against the recipe's own ``--help``."""
    words = shlex.split(command)
    own, recipe = (words[: words.index("--")], words[words.index("--") + 1:]) if "--" in words else (words, [])
    shown = help_of(own[:2])
    missing = [w for w in own if w.startswith("--") and w not in shown]
    if recipe:
        script = own[own.index("--script") + 1]
        recipe_help = help_of([sys.executable, script])
        missing += [w for w in recipe if w.startswith("--") and w not in recipe_help]
    assert not missing, f"{command}: --help does not list {missing}"
