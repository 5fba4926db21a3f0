from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlm.config import load
from jaxlm.models.bert import BertForPreTraining, BertModel
from jaxlm.nn.attention import padding_mask
from jaxlm.nn.transformer import EncoderBlock
from jaxlm.objectives.registry import PRETRAINING

# Pretraining configs; configs/finetune_*.yaml, distill_*.yaml and prune_*.yaml take their
# model from init_from or the teacher.
CONFIGS = sorted(p for p in Path(__file__).parent.parent.joinpath("configs").glob("*.yaml")
                 if not p.stem.startswith(("finetune", "distill", "prune")))


def _batch(config, B=3, T=10, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, (B, T)).astype(np.int32)
    types = np.zeros_like(ids)
    types[:, T // 2:] = 1
    mask = np.ones_like(ids)
    mask[-1, T - 3:] = 0
    return jnp.asarray(ids), jnp.asarray(types), jnp.asarray(mask)


def _count(model):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_builds_abstractly(path):
    config = load(path).model
    model = nnx.eval_shape(lambda: PRETRAINING[config.kind].build(config, nnx.Rngs(0)))
    n = _count(model)
    assert n > 0
    if path.stem == "gpt2_small":  # GPT-2's 124M (124,439,808 in the released weights)
        assert n == 124_439_808
    if path.stem == "bert_base":
        assert abs(n - 110e6) / 110e6 < 0.01
    if path.stem == "bert_large":
        assert 335e6 <= n <= 340e6


def test_param_count_matches_the_closed_form(tiny_config):
    c = tiny_config
    V, D, F, L, Tm = c.vocab_size, c.hidden_size, c.intermediate_size, c.num_layers, 64
    embeddings = (V + Tm + 2) * D + 2 * D
    layer = 4 * (D * D + D) + 2 * D + (D * F + F) + (F * D + D) + 2 * D
    heads = (D * D + D) + (D * D + D) + 2 * D + V + (2 * D + 2)  # pooler, transform, LN, bias, NSP
    model = BertForPreTraining(c, rngs=nnx.Rngs(0))
    assert _count(model) == embeddings + L * layer + heads


def test_every_param_declares_one_logical_axis_per_dim(tiny_config):
    model = BertForPreTraining(tiny_config, rngs=nnx.Rngs(0))
    names = {"vocab", "embed", "heads", "kv", "mlp", None}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = var.get_metadata()["logical_axes"]
        assert len(axes) == var.ndim, path
        assert set(axes) <= names, path
        assert var.dtype == jnp.float32


def test_output_shapes_and_dtypes(tiny_config):
    model = BertForPreTraining(tiny_config, rngs=nnx.Rngs(0))
    model.eval()
    ids, types, mask = _batch(tiny_config)
    mlm_BTV, nsp_B2 = model(ids, types, mask)
    assert mlm_BTV.shape == (3, 10, tiny_config.vocab_size) and nsp_B2.shape == (3, 2)
    assert mlm_BTV.dtype == jnp.float32 and nsp_B2.dtype == jnp.float32
    seq_BTD, pooled_BD = model.bert(ids, types, mask)
    assert seq_BTD.shape == (3, 10, 32) and pooled_BD.shape == (3, 32)


def test_gathered_logits_equal_full_logits_at_those_positions(tiny_config):
    model = BertForPreTraining(tiny_config, rngs=nnx.Rngs(0))
    model.eval()
    ids, types, mask = _batch(tiny_config)
    positions = jnp.array([[1, 4, 0], [2, 2, 7], [9, 3, 5]])
    full_BTV, nsp = model(ids, types, mask)
    gathered_BPV, nsp2 = model(ids, types, mask, positions)
    expected = np.take_along_axis(np.asarray(full_BTV), np.asarray(positions)[..., None], 1)
    np.testing.assert_allclose(gathered_BPV, expected, atol=1e-5)
    np.testing.assert_allclose(nsp, nsp2, atol=1e-6)


def test_cls_only_equals_the_full_last_layer_at_cls(tiny_config):
    model = BertModel(tiny_config, rngs=nnx.Rngs(0))
    model.eval()
    ids, types, mask = _batch(tiny_config)
    full_BTD, pooled_BD = model(ids, types, mask)
    first_B1D, pooled_cls_BD = model(ids, types, mask, cls_only=True)
    assert first_B1D.shape == (3, 1, tiny_config.hidden_size)
    np.testing.assert_allclose(first_B1D, full_BTD[:, :1], atol=1e-5)
    np.testing.assert_allclose(pooled_cls_BD, pooled_BD, atol=1e-5)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_an_encoder_block_computes_only_the_first_positions_when_asked(tiny_config, pre_norm):
    block = EncoderBlock(tiny_config, pre_norm=pre_norm, rngs=nnx.Rngs(0))
    block.eval()
    x_BTD = jax.random.normal(jax.random.key(1), (2, 7, tiny_config.hidden_size))
    mask = padding_mask(jnp.array([[1] * 7, [1] * 4 + [0] * 3]))
    np.testing.assert_allclose(block(x_BTD, mask, queries=2), block(x_BTD, mask)[:, :2],
                               atol=1e-5)


def test_padding_does_not_change_real_positions(tiny_config):
    model = BertModel(tiny_config, rngs=nnx.Rngs(0))
    model.eval()
    ids, types, mask = _batch(tiny_config, B=1, T=8)
    short, _ = model(ids[:, :5], types[:, :5], jnp.ones((1, 5), jnp.int32))
    padded_mask = jnp.array([[1, 1, 1, 1, 1, 0, 0, 0]])
    long, _ = model(ids, types, padded_mask)
    np.testing.assert_allclose(short, long[:, :5], atol=1e-5)


def test_dropout_is_random_in_train_mode_and_off_in_eval(tiny_config):
    model = BertForPreTraining(tiny_config, rngs=nnx.Rngs(params=0, dropout=1))
    batch = _batch(tiny_config)
    a, _ = model(*batch)
    b, _ = model(*batch)
    assert not np.allclose(a, b)
    model.eval()
    c, _ = model(*batch)
    d, _ = model(*batch)
    np.testing.assert_array_equal(c, d)


def test_bf16_compute_stays_close_to_float32(tiny_config):
    import dataclasses

    f32 = BertForPreTraining(tiny_config, rngs=nnx.Rngs(0))
    bf16 = BertForPreTraining(dataclasses.replace(tiny_config, dtype="bfloat16"),
                              rngs=nnx.Rngs(0))
    for m in (f32, bf16):
        m.eval()
    batch = _batch(tiny_config)
    a, na = f32(*batch)
    b, nb = bf16(*batch)
    assert b.dtype == jnp.float32  # logits are promoted back for the loss
    assert jax.tree.leaves(nnx.state(bf16, nnx.Param))[0].dtype == jnp.float32
    np.testing.assert_allclose(b, a, atol=0.05, rtol=0.05)
    np.testing.assert_allclose(nb, na, atol=0.05, rtol=0.05)
    assert not np.array_equal(a, b)  # bf16 really was used


def test_too_long_and_mismatched_inputs_say_what_is_wrong(tiny_config):
    model = BertForPreTraining(tiny_config, rngs=nnx.Rngs(0))
    ids = jnp.ones((2, 65), jnp.int32)
    with pytest.raises(ValueError, match="sequence length 65 exceeds .*max_position_embeddings=64"):
        model(ids, jnp.zeros_like(ids), jnp.ones_like(ids))
    ids = jnp.ones((2, 8), jnp.int32)
    with pytest.raises(ValueError, match=r"token_type_ids has shape \(2, 7\)"):
        model(ids, jnp.zeros((2, 7), jnp.int32), jnp.ones_like(ids))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 8\)"):
        model(ids, jnp.zeros_like(ids), jnp.ones((3, 8), jnp.int32))
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, length\]"):
        model(ids[0], jnp.zeros_like(ids[0]), jnp.ones_like(ids[0]))
    with pytest.raises(ValueError, match=r"masked_positions must be \[batch=2"):
        model(ids, jnp.zeros_like(ids), jnp.ones_like(ids), jnp.zeros((3, 2), jnp.int32))


def _residual_bytes_and_grads(config):
    """Bytes the backward pass keeps from the forward pass, and the parameter gradients."""
    model = BertForPreTraining(config, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    batch = _batch(config, B=4, T=32)

    def loss(params, rest):
        mlm, nsp = nnx.merge(graphdef, params, rest)(*batch)
        return mlm.mean() + nsp.mean()

    value, vjp = jax.vjp(loss, params, rest)
    residual_bytes = sum(x.nbytes for x in jax.tree.leaves(vjp))
    param_grads, _ = vjp(jnp.ones_like(value))
    return residual_bytes, param_grads


def test_remat_changes_memory_not_gradients(tiny_config):
    import dataclasses

    saved, grads = {}, {}
    for policy in ("none", "dots", "full"):
        config = dataclasses.replace(tiny_config, remat=policy)
        saved[policy], grads[policy] = _residual_bytes_and_grads(config)
    assert saved["full"] < saved["dots"] < saved["none"]
    for policy in ("dots", "full"):
        for a, b in zip(jax.tree.leaves(grads["none"]), jax.tree.leaves(grads[policy]),
                        strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
