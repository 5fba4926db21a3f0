"""The package's layering: the import-linter contracts in pyproject.toml hold, fail when
broken, and no function imports jaxlm lazily."""

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["lint-imports", "--no-cache"], cwd=root, capture_output=True,
                          text=True, timeout=300)


def test_the_contracts_hold():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("jaxlm/models/violation.py", "from jaxlm.training import sharding",
     "Models and nn know no training"),
    ("jaxlm/data/violation.py", "from jaxlm.models import bert", "Data never imports models"),
    ("jaxlm/training/violation.py", "from jaxlm import pretrain",
     "The library never imports"),
    ("jaxlm/config/violation.py", "from jaxlm.data import corpus", "Layers, top to bottom"),
])
def test_a_violation_breaks_its_contract(tmp_path, module, line, contract):
    for name in ("jaxlm", "benchmarks", "pyproject.toml"):
        source = REPO / name
        copy = shutil.copytree if source.is_dir() else shutil.copyfile
        copy(source, tmp_path / name)
    (tmp_path / module).write_text(line + "\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    broken = [s for s in result.stdout.splitlines() if s.endswith("BROKEN")]
    assert any(s.startswith(contract) for s in broken), result.stdout[-3000:]


# Modules that import an optional extra at their top, so that their importers may not.
NEEDS_AN_EXTRA = ("jaxlm.data.beam_pipeline",)


def _function_level_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if (isinstance(inner, ast.ImportFrom) and inner.module == "jaxlm.data"
                        and {a.name for a in inner.names} <= {m.rsplit(".", 1)[1]
                                                              for m in NEEDS_AN_EXTRA}):
                    continue
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(
                        ("jaxlm", "benchmarks")):
                    found.append(f"{path.relative_to(REPO)}:{inner.lineno}")
                if isinstance(inner, ast.Import) and any(
                        a.name.startswith(("jaxlm", "benchmarks")) for a in inner.names):
                    found.append(f"{path.relative_to(REPO)}:{inner.lineno}")
    return found


def test_no_function_imports_jaxlm():
    """Only optional heavy dependencies (torch, transformers, ...) are imported lazily."""
    files = [*(REPO / "jaxlm").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]
    assert [hit for f in files for hit in _function_level_imports(f)] == []
