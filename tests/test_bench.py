"""The benchmark code path runs (2 steps, no timing assertions) and compares like with like."""

import contextlib
import dataclasses
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from jaxlm import bench, tasks
from jaxlm.bert import BertForPreTraining
from jaxlm.config import ModelConfig


def test_synthetic_batch_labels_match_the_masked_tokens(tiny_config):
    batch = bench.synthetic_batch(tiny_config, B=3, T=16, P=4)
    a = batch.arrays
    for b in range(3):
        np.testing.assert_array_equal(batch.labels_BT[b, a["masked_positions"][b]],
                                      a["masked_ids"][b])
        assert (batch.labels_BT[b] >= 0).sum() == 4
        assert a["attention_mask"][b, a["masked_positions"][b]].all()


def test_full_vocab_batch_gives_the_same_loss(tiny_config):
    cfg = dataclasses.replace(tiny_config, hidden_dropout=0.0, attention_dropout=0.0)
    batch = bench.synthetic_batch(cfg, B=3, T=16, P=4)
    model = BertForPreTraining(cfg, rngs=nnx.Rngs(0))
    model.eval()

    def loss(arrays):
        sums = tasks.bert_sums(model, jax.tree.map(np.asarray, arrays))
        count = float(np.sum(arrays["masked_weights"]))
        return float(sums["mlm_loss"]) / count, count

    gathered, full = loss(batch.arrays), loss(bench.full_vocab(batch))
    np.testing.assert_allclose(full, gathered, rtol=1e-5)


def test_pretrain_benchmark_runs(tiny_config):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    report = bench.pretrain(tiny_config, batch_size=4, seq_len=16, steps=2, rounds=2,
                            compare=("torch", "flax", "keras_hub"))
    assert set(report["results"]) >= {"jaxlm", "torch"}
    for peer in ("flax", "keras_hub"):  # measured where installed, else a note says why
        assert peer in report["results"] or "skipped" in report["notes"][peer]
    assert report["results"]["jaxlm"]["mfu"] > 0
    assert report["results"]["jaxlm"]["floor_mfu"] > 0
    assert len(report["results"]["torch"]["rounds_s"]) == 2
    assert report["ratios"]["jaxlm/torch"] > 0
    assert "jaxlm/torch" in bench.table(report)


def test_matmul_floor_times_the_flops_the_mfu_counts(tiny_config):
    floor = bench.matmul_floor(tiny_config, batch_size=4, seq_len=16, predictions=3,
                               repeats=1)
    assert floor["flops"] == tasks.bert_train_flops(tiny_config, 4, 16, 3)
    assert floor["seconds"] > 0


def test_bad_requests_are_refused(tiny_config):
    with pytest.raises(ValueError, match="--seq-len 65 exceeds"):
        bench.pretrain(tiny_config, batch_size=2, seq_len=65, steps=1)
    with pytest.raises(ValueError, match="model.qk_norm=false to compare"):
        bench.pretrain(dataclasses.replace(tiny_config, qk_norm=True), batch_size=2,
                       seq_len=16, steps=1, compare=("torch",))


def test_keras_peer_reports_a_missing_install(tmp_path):
    """The peer runs under another Python; without keras-hub it answers with the error."""
    batch = bench.synthetic_batch(ModelConfig(vocab_size=50), B=2, T=8, P=2)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")
    python.chmod(0o755)
    with pytest.raises(ImportError, match="keras"), contextlib.ExitStack() as stack:
        bench.start_keras_hub(ModelConfig(vocab_size=50), batch, stack, python=str(python))


def test_a_peer_that_dies_is_reported_with_its_stderr():
    with pytest.raises(RuntimeError, match="the torch peer failed:\n.*boom"), \
            contextlib.ExitStack() as stack:
        bench.start_child([sys.executable, "-c", "import sys; sys.exit('boom')"], stack,
                          None, "the torch peer")


def test_fsdp_needs_fewer_bytes_per_device_than_data_parallel(tiny_config):
    report = bench.memory(tiny_config, batch_size=8, seq_len=16, meshes=["data=8", "fsdp=8"])
    data, fsdp = report["meshes"]["data=8"], report["meshes"]["fsdp=8"]
    assert fsdp["arguments"] < data["arguments"] / 4  # params and AdamW moments in 8 shards
    assert fsdp["total"] < data["total"]
    assert "fsdp=8" in bench.memory_table(report)
    with pytest.raises(ValueError, match="cannot read 'fsdp'"):
        bench.parse_mesh("fsdp")


@pytest.mark.slow
def test_loop_benchmark_compares_the_real_loop_with_the_bare_step(run_overrides):
    report = bench.loop("configs/bert_tiny.yaml", [*run_overrides, "train.log_every=2"],
                        steps=4)
    assert report["loop_tokens_per_s"] > 0 and report["bare_step_tokens_per_s"] > 0
    assert report["loop/bare"] == pytest.approx(
        report["loop_tokens_per_s"] / report["bare_step_tokens_per_s"])
