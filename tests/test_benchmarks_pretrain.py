"""The pretraining benchmark's code path runs (2 steps, no timing assertions)."""

import contextlib
import dataclasses
import sys

import pytest

from benchmarks import common, pretrain
from jaxlm.config import ModelConfig
from jaxlm.objectives import flops


@pytest.mark.slow  # a PyTorch peer process and two compilations, about 30 s
def test_pretrain_benchmark_runs(tiny_config):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    report = pretrain.pretrain(tiny_config, batch_size=4, seq_len=16, steps=2, rounds=2,
                               compare=("torch", "flax", "keras_hub"))
    assert set(report["results"]) >= {"jaxlm", "torch"}
    for peer in ("flax", "keras_hub"):  # measured where installed, else a note says why
        assert peer in report["results"] or "skipped" in report["notes"][peer]
    assert report["results"]["jaxlm"]["mfu"] > 0
    assert report["results"]["jaxlm"]["floor_mfu"] > 0
    assert len(report["results"]["torch"]["rounds_s"]) == 2
    assert report["ratios"]["jaxlm/torch"] > 0
    assert "jaxlm/torch" in pretrain.table(report)


def test_matmul_floor_times_the_flops_the_mfu_counts(tiny_config):
    floor = pretrain.matmul_floor(tiny_config, batch_size=4, seq_len=16, predictions=3,
                                  repeats=1)
    assert floor["flops"] == flops.bert_train_flops(tiny_config, 4, 16, 3)
    assert floor["seconds"] > 0


def test_bad_requests_are_refused(tiny_config):
    with pytest.raises(ValueError, match="--seq-len 65 exceeds"):
        pretrain.pretrain(tiny_config, batch_size=2, seq_len=65, steps=1)
    with pytest.raises(ValueError, match="model.qk_norm=false to compare"):
        pretrain.pretrain(dataclasses.replace(tiny_config, qk_norm=True), batch_size=2,
                          seq_len=16, steps=1, compare=("torch",))


def test_keras_peer_reports_a_missing_install(tmp_path):
    """The peer runs under another Python; without keras-hub it answers with the error."""
    batch = common.synthetic_batch(ModelConfig(vocab_size=50), B=2, T=8, P=2)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")
    python.chmod(0o755)
    with pytest.raises(ImportError, match="keras"), contextlib.ExitStack() as stack:
        pretrain.start_keras_hub(ModelConfig(vocab_size=50), batch, stack, python=str(python))
