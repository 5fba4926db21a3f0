import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlm.layers import Embedding, LayerNorm, Linear, layer_norm


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
