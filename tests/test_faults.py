"""Fault injection on the tiny run: kill -9 at random points (mid-save included), random
bytes or truncation in a random file of the newest checkpoint, a torn last metrics line.

After each fault the same command is run again, and it either continues bit for bit as the
unbroken run (so it never trained on damaged state) or refuses in a few lines naming the
problem and changing nothing. Every step's metrics line is in metrics.jsonl at the end.
Seeds beyond the first few are marked slow.
"""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from test_pretrain import _run, _train_py

from jaxlm import pretrain

STEPS = 12
ARGS = [f"train.steps={STEPS}", "train.checkpoint_every=2", "train.async_checkpoint=true",
        "train.keep_checkpoints=6"]
TIMING = ("tokens_per_s", "mfu")  # the only fields allowed to differ from the unbroken run
SLOW = pytest.mark.slow


def _lines(run_dir: Path) -> list[dict]:
    """metrics.jsonl without its timing fields."""
    text = (run_dir / "metrics.jsonl").read_text()
    return [{k: v for k, v in json.loads(s).items() if k not in TIMING}
            for s in text.splitlines()]


@pytest.fixture(scope="module")
def unbroken(run_overrides, tmp_path_factory) -> Path:
    """The reference: the run with no fault."""
    run_dir = tmp_path_factory.mktemp("unbroken")
    _run(run_overrides, run_dir, *ARGS)
    return run_dir


def _kill_somewhere(proc: subprocess.Popen, run_dir: Path, rng: np.random.Generator) -> str:
    """SIGKILLs `proc` at a random step, while a checkpoint is being written, or at a random
    time from its start (compiling, restoring); returns where."""
    where = rng.choice(["step", "save", "time"])
    metrics, checkpoints = run_dir / "metrics.jsonl", run_dir / "checkpoints"
    step = int(rng.integers(1, STEPS))
    deadline = time.time() + (rng.uniform(0.5, 6.0) if where == "time" else 120)
    while time.time() < deadline and proc.poll() is None:
        if where == "step" and metrics.exists() and f'"step": {step},' in metrics.read_text():
            time.sleep(rng.uniform(0, 0.2))
            break
        if where == "save" and checkpoints.is_dir() and any(
                ".orbax-checkpoint-tmp" in p.name for p in checkpoints.iterdir()):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return f"{where} {step}" if where == "step" else str(where)


@pytest.mark.parametrize("seed", [0, *(pytest.param(s, marks=SLOW) for s in range(1, 8))])
def test_killed_runs_resume_bit_for_bit(run_overrides, unbroken, tmp_path, seed):
    rng = np.random.default_rng(seed)
    kills = [_kill_somewhere(_train_py(tmp_path, run_overrides, *ARGS), tmp_path, rng)
             for _ in range(2)]
    final = _train_py(tmp_path, run_overrides, *ARGS)
    out = final.communicate(timeout=300)[0]
    assert final.returncode == 0, (kills, out)
    assert _lines(tmp_path) == _lines(unbroken), kills
    assert [line["step"] for line in _lines(tmp_path)] == list(range(1, STEPS + 1))


def _damage(path: Path, rng: np.random.Generator) -> str:
    """Random bytes over part of `path`, or `path` truncated; what was done."""
    raw = bytearray(path.read_bytes())
    if rng.random() < 0.5 and raw:
        size = int(rng.integers(1, min(64, len(raw)) + 1))
        start = int(rng.integers(0, len(raw) - size + 1))
        raw[start:start + size] = rng.bytes(size)
        how = f"{size} random bytes at {start}"
    else:
        raw = raw[:int(rng.integers(0, max(len(raw), 1)))]
        how = f"truncated to {len(raw)} bytes"
    path.write_bytes(bytes(raw))
    return f"{path.name}: {how}"


def _corrupt(checkpoint: Path, where: str, rng: np.random.Generator) -> list[str]:
    """Damages one random file of `checkpoint` ("any"), or every file that holds array bytes
    ("arrays": some of them are superseded OCDBT nodes that no read touches, and which those
    are changes from run to run), or the data iterator's position ("iterator")."""
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file())
    if where == "arrays":
        return [_damage(p, rng) for p in files if p.parent.name == "d"]
    if where == "iterator":
        return [_damage(checkpoint / "data" / "process_0-of-1.json", rng)]
    return [_damage(files[rng.integers(len(files))], rng)]


def _cut_copy(unbroken: Path, run_dir: Path, last_step: int) -> None:
    """The unbroken run as it was after `last_step`: its checkpoints up to there, its
    metrics up to there."""
    shutil.copytree(unbroken, run_dir, ignore=shutil.ignore_patterns(".lock"), dirs_exist_ok=True)
    for checkpoint in (run_dir / "checkpoints").iterdir():
        if int(checkpoint.name) > last_step:
            shutil.rmtree(checkpoint)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "metrics.jsonl").write_text("".join(lines[:last_step]))


@pytest.fixture
def main(run_overrides, monkeypatch, capsys):
    """train.py's main in this process: (exit code, what it printed)."""
    import logging

    jaxlm_log = logging.getLogger("jaxlm")  # main() sets up its handler: undone afterwards
    monkeypatch.setattr(jaxlm_log, "handlers", list(jaxlm_log.handlers))
    monkeypatch.setattr(jaxlm_log, "propagate", jaxlm_log.propagate)

    def call(run_dir: Path) -> tuple[int, str]:
        code = pretrain.main([*run_overrides, *ARGS, f"run_dir={run_dir}",
                              "train.async_checkpoint=false"])
        printed = capsys.readouterr()
        return code, printed.out + printed.err

    return call


@pytest.mark.parametrize("where, seed", [
    ("arrays", 0), ("iterator", 0), ("any", 0),
    *(pytest.param("any", s, marks=SLOW) for s in range(1, 16)),
    *(pytest.param(where, s, marks=SLOW) for where in ("arrays", "iterator")
      for s in range(1, 4))])
def test_corrupt_checkpoint_bytes_resume_or_refuse(unbroken, tmp_path, main, where, seed):
    """Training after the newest checkpoint was damaged either matches the unbroken run from
    an older checkpoint (or from this one, where the damage is in bytes nothing reads), or
    stops with a short message that names the checkpoint, changing none of its files.
    Damage to every array file or to the data position is never resumed from."""
    rng = np.random.default_rng(seed)
    _cut_copy(unbroken, tmp_path, 6)
    damage = _corrupt(tmp_path / "checkpoints" / "6", where, rng)
    before = {p: p.read_bytes() for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()}
    code, out = main(tmp_path)
    if code == 0:
        assert _lines(tmp_path) == _lines(unbroken), damage
        if where != "any":
            assert [p.name.split("-")[0] for p in (tmp_path / "corrupt_checkpoints").iterdir()
                    ] == ["6"], (damage, out)
    else:
        assert "Traceback" not in out and len(out.strip().splitlines()) <= 3, (damage, out)
        assert str(tmp_path / "checkpoints" / "6") in out, (damage, out)
        assert {p: p.read_bytes() for p in (tmp_path / "checkpoints").rglob("*")
                if p.is_file()} == before, damage


@pytest.mark.parametrize("seed", [0, *(pytest.param(s, marks=SLOW) for s in range(1, 4))])
def test_a_torn_last_metrics_line_loses_nothing(unbroken, tmp_path, main, seed):
    """A kill while a metrics line is written leaves part of it; the rerun drops it, runs
    the step again and writes every line."""
    rng = np.random.default_rng(seed)
    _cut_copy(unbroken, tmp_path, 6)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines(keepends=True)
    extra = lines[0].replace('"step": 1,', '"step": 7,')
    (tmp_path / "metrics.jsonl").write_text(
        "".join(lines) + extra[:int(rng.integers(1, len(extra) - 1))])
    code, out = main(tmp_path)
    assert code == 0, out
    assert _lines(tmp_path) == _lines(unbroken)


def test_a_data_position_that_still_parses_is_caught(unbroken, tmp_path, main):
    """One digit of the saved data-iterator position changed: the JSON reads, Grain would
    resume elsewhere in the data; the CRC-32 saved with the checkpoint catches it."""
    _cut_copy(unbroken, tmp_path, 6)
    position = tmp_path / "checkpoints" / "6" / "data" / "process_0-of-1.json"
    state = json.loads(position.read_text())
    state["last_seen_indices"]["0"] += 16
    position.write_text(json.dumps(state, indent=4))
    code, out = main(tmp_path)
    assert code == 0, out
    assert "data-iterator position does not match its CRC-32" in out
    assert _lines(tmp_path) == _lines(unbroken)


# Writes past 98 KiB per file fail with EFBIG, as on a full disk (no mount needed); SIGXFSZ
# ignored makes it an error, not a kill.
FILE_SIZE_LIMIT = ["bash", "-c", "ulimit -f 98; trap '' XFSZ; exec \"$@\"", "--"]


def test_a_failed_checkpoint_write_is_one_line_and_loses_nothing(run_overrides, unbroken,
                                                                 tmp_path, main):
    """The first checkpoint's larger array files cannot be written: the run stops with one
    line naming the directory and the OS error, exit 1; the same command with room again
    trains the whole run, bit for bit."""
    proc = _train_py(tmp_path, run_overrides, *ARGS, launcher=FILE_SIZE_LIMIT)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, out
    errors = [line for line in out.splitlines() if " ERROR " in line]
    assert len(errors) == 1, out
    assert f"writing a checkpoint under {tmp_path / 'checkpoints'} failed" in errors[0], out
    assert "File too large" in errors[0] and "Traceback" not in out, out
    code, printed = main(tmp_path)
    assert code == 0, printed
    assert _lines(tmp_path) == _lines(unbroken)
