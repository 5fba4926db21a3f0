import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlm.nn.layers import (
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    fmix32,
    hash_bits,
    layer_norm,
    rows_matmul,
)


def test_layer_norm_matches_numpy():
    x = np.random.default_rng(0).normal(3.0, 2.0, (2, 5, 8)).astype(np.float32)
    scale, bias = np.linspace(0.5, 1.5, 8), np.linspace(-1, 1, 8)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mu) / np.sqrt(var + 1e-12) * scale + bias
    got = layer_norm(jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias), 1e-12)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_layer_norm_statistics_are_float32_under_bf16():
    x = jnp.asarray(np.random.default_rng(1).normal(100.0, 0.01, (4, 64)), jnp.bfloat16)
    norm = LayerNorm(64, eps=1e-12, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    y = norm(x)
    assert y.dtype == jnp.bfloat16 and norm.scale.dtype == jnp.float32
    ref = layer_norm(x.astype(jnp.float32), jnp.ones(64), jnp.zeros(64), 1e-12)
    np.testing.assert_allclose(np.asarray(y, np.float32), ref, atol=0.05)


def test_linear_is_the_einsum_it_names_with_the_bias_on_the_output_dims():
    lin = Linear("BTD,DNH->BTNH", (6, 2, 3), ("embed", "heads", "kv"), init_std=0.5,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    assert lin.bias.shape == (2, 3)
    assert lin.bias.get_metadata()["logical_axes"] == ("heads", "kv")
    assert lin.kernel.get_metadata()["logical_axes"] == ("embed", "heads", "kv")
    lin.bias.set_value(jnp.arange(6.0).reshape(2, 3))
    x = np.random.default_rng(0).normal(size=(2, 4, 6)).astype(np.float32)
    w = np.asarray(lin.kernel[...]).reshape(6, 6)
    expected = (x @ w).reshape(2, 4, 2, 3) + np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(lin(jnp.asarray(x)), expected, atol=1e-5)


def test_embedding_lookup_and_tied_scores():
    emb = Embedding(7, 4, ("vocab", "embed"), init_std=1.0, dtype=jnp.float32,
                    param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    table = np.asarray(emb.embedding[...])
    ids = np.array([[0, 6, 3]])
    np.testing.assert_array_equal(emb(jnp.asarray(ids)), table[ids])
    x = np.ones((1, 2, 4), np.float32)
    np.testing.assert_allclose(emb.attend(jnp.asarray(x)), x @ table.T, atol=1e-5)


def test_rows_matmul_values_and_gradients_match_numpy():
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(2, 3, 4)), rng.normal(size=(4, 7))
    g = rng.normal(size=(2, 3, 7))  # d loss / d y for loss = sum(y * g)
    xj, wj = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
    np.testing.assert_allclose(rows_matmul(xj, wj), x @ w, rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda x, w: jnp.sum(rows_matmul(x, w) * g), argnums=(0, 1))(xj, wj)
    np.testing.assert_allclose(grads[0], g @ w.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[1], np.einsum("btd,btv->dv", x, g), rtol=1e-5, atol=1e-6)


def test_linear_rejects_an_equation_it_cannot_run_as_one_matmul():
    with pytest.raises(ValueError, match="BTD,FD->BTF"):
        Linear("BTD,FD->BTF", (3, 4), ("mlp", "embed"), init_std=0.5, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs=nnx.Rngs(0))


def test_lora_adds_a_scaled_low_rank_update_that_starts_at_zero():
    D, N, H, R = 6, 2, 3, 2
    kw = dict(init_std=0.5, dtype=jnp.float32, param_dtype=jnp.float32)
    lin = Linear("BTD,DNH->BTNH", (D, N, H), ("embed", "heads", "kv"), rngs=nnx.Rngs(0),
                 lora_rank=R, lora_alpha=4.0, **kw)
    assert lin.lora.a.shape == (D, R) and lin.lora.b.shape == (R, N, H)
    assert lin.lora.a.get_metadata()["logical_axes"] == ("embed", None)
    assert lin.lora.b.get_metadata()["logical_axes"] == (None, "heads", "kv")
    x = np.random.default_rng(1).normal(size=(2, 5, D)).astype(np.float32)
    W, b = np.asarray(lin.kernel[...]), np.asarray(lin.bias[...])
    plain = np.einsum("btd,dnh->btnh", x, W) + b
    np.testing.assert_allclose(lin(jnp.asarray(x)), plain, atol=1e-5)  # B = 0 at init
    B = np.random.default_rng(2).normal(size=(R, N, H)).astype(np.float32)
    lin.lora.b.set_value(jnp.asarray(B))
    A = np.asarray(lin.lora.a[...])
    merged = W + (A @ B.reshape(R, -1)).reshape(D, N, H) * 4.0 / R  # Hu et al. eq. 3
    np.testing.assert_allclose(lin(jnp.asarray(x)), np.einsum("btd,dnh->btnh", x, merged) + b,
                               atol=1e-4)
    np.testing.assert_allclose(lin.lora.delta(W.shape), merged - W, atol=1e-5)

    out = Linear("BTNH,NHD->BTD", (N, H, D), ("heads", "kv", "embed"), rngs=nnx.Rngs(0),
                 lora_rank=R, lora_alpha=4.0, **kw)
    assert out.lora.a.shape == (N, H, R) and out.lora.b.shape == (R, D)
    assert Linear("BD,DK->BK", (D, 2), ("embed", None), rngs=nnx.Rngs(0), **kw).lora is None


def _fmix32_reference(h: int) -> int:
    """MurmurHash3's fmix32 on a Python int, written from its published definition."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def test_hash_bits_are_fmix32_of_the_keyed_index():
    values = [0, 1, 2, 0xDEADBEEF, 0xFFFFFFFF, 123456789]
    got = np.asarray(fmix32(jnp.asarray(values, jnp.uint32)))
    assert got.tolist() == [_fmix32_reference(v) for v in values]
    key = jax.random.key(3)
    k0, k1 = (int(k) for k in jax.random.bits(key, (2,), jnp.uint32))
    bits = np.asarray(hash_bits(key, (3, 5)))
    expected = [_fmix32_reference((_fmix32_reference(i ^ k0) + k1) & 0xFFFFFFFF)
                for i in range(15)]
    assert bits.ravel().tolist() == expected


def test_hash_bits_look_uniform_and_depend_on_the_key():
    bits = np.asarray(hash_bits(jax.random.key(0), (1 << 20,)))
    ones_per_bit = ((bits[:, None] >> np.arange(32, dtype=np.uint32)) & 1).mean(0)
    np.testing.assert_allclose(ones_per_bit, 0.5, atol=4 * 0.5 / 2**10)  # 4 sigma
    other = np.asarray(hash_bits(jax.random.key(1), (1 << 20,)))
    same_bit = (((bits ^ other) >> np.arange(32, dtype=np.uint32)[:, None]) & 1) == 0
    np.testing.assert_allclose(same_bit.mean(1), 0.5, atol=4 * 0.5 / 2**10)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_drops_at_its_rate_and_scales_the_rest(rate):
    drop = Dropout(rate, rngs=nnx.Rngs(dropout=0))
    x = jnp.full((256, 4096), 2.0)
    y = np.asarray(drop(x))
    kept = y != 0
    sigma = np.sqrt(rate * (1 - rate) / y.size)
    assert abs(kept.mean() - (1 - rate)) < 4 * sigma
    np.testing.assert_allclose(y[kept], 2.0 / (1 - rate), rtol=1e-6)
    assert not np.array_equal(np.asarray(drop(x)) != 0, kept)  # the stream moves on
    drop.eval()
    np.testing.assert_array_equal(drop(x), x)
