"""README.md opens with the two commands, and CI runs the second one verbatim."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (REPO / "README.md").read_text(), re.S)[:2]


def test_readme_opens_with_setup_and_test_commands():
    setup, tests = _commands()
    assert "python train.py" in setup and "pip install -e ." in setup
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command():
    _, tests = _commands()
    assert tests in (REPO / ".ci" / "run").read_text().splitlines()
