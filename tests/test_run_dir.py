"""What a run does to its run directory: one run at a time, refusals that write nothing,
resumes that cannot continue the data order, and history that is never dropped."""

import hashlib
import json
import logging
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from test_pretrain import _run, _train_losses, _train_py, _wait_for_step

from jaxlm import fill_mask as fill_mask_cli
from jaxlm import pretrain
from jaxlm.config import ConfigError
from jaxlm.training.run_dir import RunDirInUse


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(run_dir: Path) -> dict[str, str]:
    """Every file under `run_dir` with its content hash."""
    return {str(p.relative_to(run_dir)): _digest(p) for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != ".lock"}  # the lock names its holder


def test_a_refused_resume_writes_nothing(run_overrides, tmp_path):
    """A different tokenizer (here: another vocabulary size) is refused by the model check;
    the run's tokenizer.json, checkpoints and metrics stay as they were."""
    _run(run_overrides, tmp_path, "train.steps=2", "train.checkpoint_every=2")
    before = _tree(tmp_path)
    with pytest.raises(ConfigError, match="model.vocab_size: saved 160, now 150"):
        _run(run_overrides, tmp_path, "train.steps=4", "data.vocab_size=150")
    assert _tree(tmp_path) == before


def test_a_changed_batch_size_is_refused_not_quarantined(run_overrides, tmp_path):
    """The data iterator of the checkpoint cannot continue with another batch size: the run is
    refused, naming the setting, and every checkpoint stays where it is; with
    train.restart_data=true the weights and optimizer resume and the data starts afresh."""
    _run(run_overrides, tmp_path, "train.steps=2", "train.checkpoint_every=2")
    before = _tree(tmp_path)
    with pytest.raises(ConfigError, match=r"train.batch_size: saved 16, now 8.*"
                                          r"train.restart_data=true"):
        _run(run_overrides, tmp_path, "train.steps=4", "train.batch_size=8")
    assert _tree(tmp_path) == before
    assert not (tmp_path / "corrupt_checkpoints").exists()
    summary = _run(run_overrides, tmp_path, "train.steps=4", "train.batch_size=8",
                   "train.restart_data=true")
    assert summary["train"]["step"] == 4
    assert sorted(_train_losses(tmp_path)) == [1, 2, 3, 4]


def test_a_run_without_checkpoints_keeps_the_old_metrics(run_overrides, tmp_path, caplog,
                                                         monkeypatch):
    """Deleting checkpoints/ starts the run from step 0; the earlier metrics are moved aside,
    not truncated."""
    monkeypatch.setattr(logging.getLogger("jaxlm"), "propagate", True)  # to caplog
    _run(run_overrides, tmp_path, "train.steps=3")
    old = (tmp_path / "metrics.jsonl").read_text()
    shutil.rmtree(tmp_path / "checkpoints")
    _run(run_overrides, tmp_path, "train.steps=2")
    kept = sorted(tmp_path.glob("metrics-*.jsonl"))
    assert len(kept) == 1 and kept[0].read_text() == old
    assert sorted(_train_losses(tmp_path)) == [1, 2]
    assert f"kept in {kept[0]}" in caplog.text


def test_a_torn_metrics_line_does_not_block_the_resume(run_overrides, tmp_path):
    """A run killed while writing metrics.jsonl leaves half a line; the rerun drops it with a
    warning and resumes."""
    _run(run_overrides, tmp_path, "train.steps=2", "train.checkpoint_every=2")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 4.2')
    _run(run_overrides, tmp_path, "train.steps=3")
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [d["step"] for d in lines] == [1, 2, 3]


def test_one_run_at_a_time(run_overrides, tmp_path):
    """A second run on a busy run_dir is refused and changes nothing; a kill -9 of the first
    leaves no stale lock behind."""
    first = _train_py(tmp_path, run_overrides, "train.steps=100000",
                      "train.checkpoint_every=100000")
    try:
        _wait_for_step(tmp_path, 2, first)
        with pytest.raises(RunDirInUse, match=rf"{tmp_path} is in use by another run "
                                              rf"\(pid {first.pid} on "):
            _run(run_overrides, tmp_path, "train.steps=2")
        assert max(_train_losses(tmp_path)) >= 2
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    summary = _run(run_overrides, tmp_path, "train.steps=2")
    assert summary["train"]["step"] == 2


def _corrupt_the_largest_array_file(checkpoint: Path, seed: int = 0) -> None:
    """Random bytes over 256 bytes in the middle of the checkpoint's largest data file. With
    every array in one shard (one device) that file holds the arrays' chunks: they still
    decode, with other values."""
    files = [p for p in (checkpoint / "state").rglob("*") if p.is_file() and "d" in p.parts]
    largest = max(files, key=lambda p: p.stat().st_size)
    raw = bytearray(largest.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 256] = np.random.default_rng(seed).bytes(256)
    largest.write_bytes(bytes(raw))


def test_corrupted_checkpoint_bytes_are_detected(run_overrides, tmp_path):
    """A checkpoint whose array bytes changed after it was written is set aside as corrupt;
    the run resumes from the previous one, bit for bit as an unbroken run."""
    args = ["train.steps=4", "train.checkpoint_every=1"]

    def train_py(run_dir, *extra):  # on one device: one shard per array
        proc = _train_py(run_dir, run_overrides, *extra,
                         env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out

    train_py(tmp_path / "whole", *args)
    train_py(tmp_path / "cut", *args, "train.steps=2")
    _corrupt_the_largest_array_file(tmp_path / "cut" / "checkpoints" / "2")
    train_py(tmp_path / "cut", *args)
    assert [p.name.split("-")[0] for p in (tmp_path / "cut" / "corrupt_checkpoints").iterdir()
            ] == ["2"]
    assert _train_losses(tmp_path / "cut") == _train_losses(tmp_path / "whole")


def test_train_steps_at_or_below_the_checkpoint(run_overrides, tmp_path, capsys, monkeypatch):
    """At train.steps the run has nothing to do (exit 0, saying so); below it, it is refused."""
    jaxlm_log = logging.getLogger("jaxlm")  # main() sets up its handler: undone afterwards
    monkeypatch.setattr(jaxlm_log, "handlers", list(jaxlm_log.handlers))
    monkeypatch.setattr(jaxlm_log, "propagate", jaxlm_log.propagate)
    _run(run_overrides, tmp_path, "train.steps=2", "train.checkpoint_every=2")
    before = _tree(tmp_path)
    with pytest.raises(ConfigError, match="holds step 2, past train.steps=1; raise "
                                          "train.steps"):
        _run(run_overrides, tmp_path, "train.steps=1")
    assert _tree(tmp_path) == before
    assert pretrain.main([*run_overrides, f"run_dir={tmp_path}", "train.steps=2"]) == 0
    assert "done: nothing to train" in capsys.readouterr().out


def test_inference_falls_back_past_an_unreadable_checkpoint(run_overrides, tmp_path, capsys):
    """fill-mask (and every loader of a run) skips an unreadable newest checkpoint with a
    warning, as training does, and names the problem in one line when none reads."""
    _run(run_overrides, tmp_path, "train.steps=2", "train.checkpoint_every=1")
    for manifest in (tmp_path / "checkpoints" / "2" / "state").rglob("manifest.ocdbt"):
        manifest.unlink()
    argv = ["--checkpoint", str(tmp_path), "to be or [MASK] to be"]
    assert fill_mask_cli.main(argv) == 0
    assert "[MASK] 1:" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "checkpoints" / "1" / "state")
    assert fill_mask_cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}: no readable checkpoint (step 2: " in err and "Traceback" not in err


def test_an_unreadable_checkpoint_costs_one_warning_line(run_overrides, tmp_path):
    """The failed read of a damaged checkpoint is reported once, not as a traceback per
    pending TensorStore read (about 850 lines before)."""
    _run(run_overrides, tmp_path, "train.steps=2", "train.checkpoint_every=1")
    state = tmp_path / "checkpoints" / "2" / "state"
    (state / "manifest.ocdbt").unlink()
    shutil.rmtree(state / "d")
    proc = _train_py(tmp_path, run_overrides, "train.steps=3")
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert out.count("is unreadable") == 1, out
    assert "Traceback" not in out and "Event loop is closed" not in out, out


def test_a_run_dir_that_cannot_be_written_is_one_line(run_overrides, tmp_path):
    """File-system errors (here: run_dir inside a file; a full disk or a read-only directory
    raise the same OSError family) end the run with one line naming the path, exit 1."""
    (tmp_path / "notes.txt").write_text("mine")
    proc = _train_py(tmp_path / "notes.txt" / "run", run_overrides, "train.steps=1")
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, out
    assert f"{tmp_path / 'notes.txt' / 'run'}" in out and "Traceback" not in out, out
    assert (tmp_path / "notes.txt").read_text() == "mine"
