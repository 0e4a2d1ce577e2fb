"""The README's promises and ``.ci/run`` stay in step: the README opens with the two
commands a newcomer runs (the demo, then the tests), and ``.ci/run`` runs exactly the test
command the README gives."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    return [(lang, body.strip()) for lang, body in FENCE.findall(text)]


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def readme_test_command() -> str:
    blocks = fenced_blocks(section(README.read_text(), "Running the tests"))
    assert blocks, "the 'Running the tests' section gives no command"
    return blocks[0][1]


def ci_last_command() -> str:
    """The last line of .ci/run that is not blank or a comment: what it ends by running."""
    lines = [line for line in CI.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return lines[-1]


def test_readme_opens_with_the_demo_and_the_tests() -> None:
    text = README.read_text()
    blocks = fenced_blocks(text)
    # Nothing but the title and a sentence before the two commands.
    before = text[: text.index("```")]
    assert before.startswith("# seawall\n") and before.count("\n\n") <= 2
    (lang1, demo), (lang2, tests) = blocks[0], blocks[1]
    assert (lang1, lang2) == ("sh", "sh")
    assert "\n" not in demo and "\n" not in tests, "each opening command is one line"
    assert demo.startswith("python3 -m venv .venv && ")
    assert "pip install -e '.[test]'" in demo
    assert demo.endswith("seawall demo")
    assert tests == ".ci/run"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = readme_test_command()
    assert shlex.split(command)[0] == ".venv/bin/pytest"
    last = ci_last_command()
    # At the top level (not indented inside a branch), and exactly the README's words.
    assert last == command, f".ci/run ends with {last!r}, README says {command!r}"
    assert CI.read_text().count(command) == 1


def test_ci_script_is_strict_and_executable() -> None:
    text = CI.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(CI, os.X_OK)
    assert "python3 -m venv .venv" in text
    assert ".venv/bin/pip install" in text and "-e '.[test]'" in text
    assert ("redis-server --daemonize yes --port 6379 --bind 127.0.0.1 --save '' "
            "--appendonly no") in text


def test_readme_benchmark_command_names_a_real_script() -> None:
    blocks = fenced_blocks(section(README.read_text(), "Benchmarks"))
    script = shlex.split(blocks[0][1])[1]
    assert (ROOT / script).is_file()
