"""The benchmarks' synthetic batch compares like with like; a dead peer is reported."""

import contextlib
import dataclasses
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from benchmarks import common
from jaxlm.models.bert import BertForPreTraining
from jaxlm.objectives import tasks


def test_synthetic_batch_labels_match_the_masked_tokens(tiny_config):
    batch = common.synthetic_batch(tiny_config, B=3, T=16, P=4)
    a = batch.arrays
    for b in range(3):
        np.testing.assert_array_equal(batch.labels_BT[b, a["masked_positions"][b]],
                                      a["masked_ids"][b])
        assert (batch.labels_BT[b] >= 0).sum() == 4
        assert a["attention_mask"][b, a["masked_positions"][b]].all()


def test_full_vocab_batch_gives_the_same_loss(tiny_config):
    cfg = dataclasses.replace(tiny_config, hidden_dropout=0.0, attention_dropout=0.0)
    batch = common.synthetic_batch(cfg, B=3, T=16, P=4)
    model = BertForPreTraining(cfg, rngs=nnx.Rngs(0))
    model.eval()

    def loss(arrays):
        sums = tasks.bert_sums(model, jax.tree.map(np.asarray, arrays))
        count = float(np.sum(arrays["masked_weights"]))
        return float(sums["mlm_loss"]) / count, count

    gathered, full = loss(batch.arrays), loss(common.full_vocab(batch))
    np.testing.assert_allclose(full, gathered, rtol=1e-5)


def test_a_peer_that_dies_is_reported_with_its_stderr():
    with pytest.raises(RuntimeError, match="the torch peer failed:\n.*boom"), \
            contextlib.ExitStack() as stack:
        common.start_child([sys.executable, "-c", "import sys; sys.exit('boom')"], stack,
                           None, "the torch peer")
