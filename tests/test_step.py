"""The jitted train/eval steps: BERT's loss, skipped non-finite updates, eval metrics."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import data
from jaxlm.config import MeshConfig, load
from jaxlm.objectives import tasks
from jaxlm.objectives.registry import PRETRAINING
from jaxlm.training import optim, sharding
from jaxlm.training.state import merge, setup_state
from jaxlm.training.step import make_train_step


@pytest.fixture
def parts(run_overrides):
    cfg = load(None, [*run_overrides, "model.hidden_dropout=0", "model.attention_dropout=0"])
    prepared = data.prepare(cfg.data, seed=0)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=prepared.vocab_size)
    mesh = sharding.make_mesh(MeshConfig(data=4, fsdp=2))
    tx = optim.make_optimizer(cfg.train)
    setup = setup_state(model_cfg, 0, tx, mesh)
    step = make_train_step(setup, tx, optim.learning_rate_schedule(cfg.train), mesh)
    loader = data.make_loader(prepared, "train", 16, seed=0, shuffle=True, num_epochs=None)
    batch = sharding.global_batch(next(iter(loader)), mesh)
    return setup, step, batch, mesh


def _numpy_bert_loss(mlm_logits, nsp_logits, batch):
    """BERT's pretraining loss re-derived in numpy: weighted mean MLM xent + mean NSP xent."""
    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    ids, w = np.asarray(batch["masked_ids"]), np.asarray(batch["masked_weights"])
    mlm = -np.take_along_axis(log_softmax(mlm_logits), ids[..., None], -1)[..., 0]
    nsp_labels = np.asarray(batch["next_sentence_label"])
    nsp = -log_softmax(nsp_logits)[np.arange(len(nsp_labels)), nsp_labels]
    return (mlm * w).sum() / w.sum() + nsp.mean()


def test_step_loss_is_berts_loss(parts):
    setup, step, batch, _ = parts
    state = setup.init()
    module = merge(setup.model, jax.device_get(state.params), setup.fixed)
    module.eval()
    mlm, nsp = module(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                      batch["masked_positions"])
    expected = _numpy_bert_loss(np.asarray(mlm, np.float64), np.asarray(nsp, np.float64), batch)
    _, metrics = step(state, setup.fixed, batch)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
    assert int(metrics["skipped_steps"]) == 0


def test_non_finite_gradient_skips_the_update_and_counts_it(parts):
    setup, step, batch, mesh = parts
    state = setup.init()
    bias = state.params["mlm_head"]["bias"]
    poisoned = jax.device_put(jnp.full(bias.shape, jnp.nan), bias.sharding)
    params = jax.tree.map(lambda x: x, state.params)
    params["mlm_head"]["bias"] = poisoned
    state = dataclasses.replace(state, params=params)
    before = jax.device_get(state.params)
    new_state, metrics = step(state, setup.fixed, batch)
    assert int(metrics["skipped_steps"]) == 1 and int(metrics["bad_streak"]) == 1
    assert int(new_state.step) == 1
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(new_state.params)),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_eval_metrics_from_sums():
    sums = {"mlm_loss": 20.0, "nsp_loss": 3.0, "mlm_correct": 5.0, "nsp_correct": 3.0,
            "mlm_count": 10.0, "nsp_count": 4.0}
    out = tasks.eval_metrics(PRETRAINING["bert"], sums)
    assert out["eval_mlm_accuracy"] == 0.5 and out["eval_nsp_accuracy"] == 0.75
    np.testing.assert_allclose(out["eval_perplexity"], np.exp(2.0), rtol=1e-6)
    np.testing.assert_allclose(out["eval_loss"], 2.75)
