"""notebooks/pretrain_and_finetune.ipynb runs top to bottom (with tiny step counts)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "pretrain_and_finetune.ipynb"


def notebook_script(path: Path) -> str:
    """The code cells as one Python script; IPython shell lines (`!cmd`, `%magic`) become
    `pass`, keeping their indentation."""
    cells = json.loads(path.read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return re.sub(r"^(\s*)[!%].*$", r"\1pass", code, flags=re.M)


@pytest.mark.slow  # pretrains and fine-tunes twice in a subprocess, about a minute
def test_notebook_code_cells_run(tmp_path):
    script = tmp_path / "notebook.py"
    script.write_text(notebook_script(NOTEBOOK))
    # One CPU device, as on a Colab CPU runtime (the 8 fake devices of the suite would
    # only slow the compilations down; other tests cover sharding).
    env = {**os.environ, "JAXLM_NOTEBOOK_QUICK": "1", "MPLBACKEND": "Agg", "XLA_FLAGS": ""}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout
    assert (tmp_path / "runs" / "notebook_classify_hf" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "notebook_classify" / "loss.png").is_file()
