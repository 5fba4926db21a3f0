"""The benchmark code path runs (2 steps, no timing assertions) and compares like with like."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from jaxlm import bench, tasks
from jaxlm.bert import BertForPreTraining


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
    report = bench.pretrain(tiny_config, batch_size=4, seq_len=16, steps=2,
                            compare=("torch", "flax"))
    assert set(report["results"]) >= {"jaxlm", "torch"}
    assert "flax" in report["results"] or "flax" in report["notes"]
    assert report["results"]["jaxlm"]["mfu"] > 0
    assert report["ratios"]["jaxlm/torch"] > 0
    assert "jaxlm/torch" in bench.table(report)


def test_sequence_longer_than_positions_is_refused(tiny_config):
    with pytest.raises(ValueError, match="--seq-len 65 exceeds"):
        bench.pretrain(tiny_config, batch_size=2, seq_len=65, steps=1)
