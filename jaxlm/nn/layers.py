"""Layers shared by every model: einsum projections, embeddings, layer norm, dropout.

Shapes follow the legend in `jaxlm/__init__.py`. Every parameter carries `logical_axes`
metadata, one name per dimension ("vocab", "embed", "heads", "kv", "mlp" or None), and the
activations between blocks are tagged the same way (`with_logical_axes`);
`jaxlm/training/sharding.py` maps those names onto a device mesh. Nothing here knows about meshes.
"""

from __future__ import annotations

import contextvars
import math

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = jax.nn.initializers.Initializer

# How to lay an activation out on the device mesh given its logical axes: set by
# `jaxlm.training.sharding.activation_layout` while a step is traced; None leaves it to XLA.
ACTIVATION_LAYOUT: contextvars.ContextVar = contextvars.ContextVar("activation_layout",
                                                                  default=None)


def with_logical_axes(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
    """`x` laid out on the mesh as its logical axes say (one name per dimension, e.g.
    ("batch", "length", "embed")) when a step is traced for a mesh; else `x` itself."""
    layout = ACTIVATION_LAYOUT.get()
    return x if layout is None else layout(x, axes)


def param(rngs: nnx.Rngs, init: Initializer, shape: tuple[int, ...], axes: tuple,
          param_dtype) -> nnx.Param:
    """A parameter initialised by `init`, tagged with one logical axis name per dimension."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {axes} do not match parameter shape {shape}")
    return nnx.Param(init(rngs.params(), shape, param_dtype), logical_axes=tuple(axes))


def _einsum_parts(equation: str) -> tuple[str, str, str]:
    lhs, out = equation.replace(" ", "").split("->")
    x, kernel = lhs.split(",")
    return x, kernel, out


class LoRA(nnx.Module):
    """A low-rank update x -> (x A) B * alpha / R beside a frozen kernel (Hu et al. 2021, 4.1).

    For a kernel "DNH" read as [in=D, out=NH], `a` is [D, R] (Gaussian, std 1/sqrt(in)) and
    `b` is [R, N, H] (zeros), so the adapted layer starts out equal to the pretrained one.
    """

    def __init__(self, equation: str, kernel_shape: tuple[int, ...], kernel_axes: tuple,
                 rank: int, alpha: float, *, dtype, param_dtype, rngs: nnx.Rngs):
        x_letters, kernel_letters, out_letters = _einsum_parts(equation)
        ins = [i for i, c in enumerate(kernel_letters) if c not in out_letters]
        outs = [i for i, c in enumerate(kernel_letters) if c in out_letters]
        rows = "".join(c for c in x_letters if c not in kernel_letters)  # e.g. "BT"
        contracted = "".join(kernel_letters[i] for i in ins)
        kept = "".join(kernel_letters[i] for i in outs)
        self.down = f"{x_letters},{contracted}R->{rows}R"  # e.g. "BTD,DR->BTR"
        self.up = f"{rows}R,R{kept}->{out_letters}"  # e.g. "BTR,RNH->BTNH"
        self.scale = alpha / rank
        self.dtype = dtype
        fan_in = math.prod(kernel_shape[i] for i in ins)
        self.a = param(rngs, jax.nn.initializers.normal(fan_in ** -0.5),
                       (*(kernel_shape[i] for i in ins), rank),
                       (*(kernel_axes[i] for i in ins), None), param_dtype)
        self.b = param(rngs, jax.nn.initializers.zeros, (rank, *(kernel_shape[i] for i in outs)),
                       (None, *(kernel_axes[i] for i in outs)), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jnp.einsum(self.down, x.astype(self.dtype), self.a[...].astype(self.dtype))
        return jnp.einsum(self.up, h, self.b[...].astype(self.dtype)) * self.scale

    def delta(self, kernel_shape: tuple[int, ...]) -> jax.Array:
        """The update as a full kernel, A B * alpha / R: what merging the adapter adds."""
        a_IR = self.a[...].reshape(-1, self.a.shape[-1])
        b_RO = self.b[...].reshape(self.b.shape[0], -1)
        return (a_IR @ b_RO * self.scale).reshape(kernel_shape)


def rows_matmul(x: jax.Array, w_IO: jax.Array) -> jax.Array:
    """x [..., I] @ w_IO -> [..., O], as one 2-D matmul over all leading axes folded into M.

    The same numbers as `jnp.einsum("BTI,IO->BTO", ...)`; folded, the gradient of `w`
    contracts one row axis, since XLA:CPU copies the output gradient transposed for two
    (docs/benchmarks.md).
    """
    y_MO = x.reshape(-1, x.shape[-1]) @ w_IO
    return y_MO.reshape(*x.shape[:-1], w_IO.shape[-1])


class Linear(nnx.Module):
    """An affine map written as an einsum whose letters are the shape legend.

    `Linear("BTD,DNH->BTNH", (D, N, H), ("embed", "heads", "kv"), ...)` projects into heads.
    The input's letters are rows (BT) then the contracted ones (D); the kernel's are the
    contracted then the kept ones (NH); the output's are rows then kept. The bias covers the
    kept dimensions. With `lora_rank` > 0 a `LoRA` adapter adds its low-rank update. The
    product runs as `rows_matmul` of [rows, contracted] by [contracted, kept].
    """

    def __init__(self, equation: str, kernel_shape: tuple[int, ...], kernel_axes: tuple, *,
                 init_std: float, dtype, param_dtype, rngs: nnx.Rngs, lora_rank: int = 0,
                 lora_alpha: float = 1.0):
        x_letters, kernel_letters, out_letters = _einsum_parts(equation)
        if len(kernel_letters) != len(kernel_shape):
            raise ValueError(f"{equation}: kernel shape {kernel_shape} has the wrong rank")
        n_in = sum(c not in out_letters for c in kernel_letters)
        rows = x_letters[:len(x_letters) - n_in]
        if (x_letters[len(rows):] != kernel_letters[:n_in]
                or out_letters != rows + kernel_letters[n_in:]):
            raise ValueError(f"{equation}: Linear needs input = rows + contracted, kernel = "
                             "contracted + kept and output = rows + kept (e.g. BTD,DF->BTF)")
        self.in_shape = tuple(kernel_shape[:n_in])
        self.kept_shape = tuple(kernel_shape[n_in:])
        self.dtype = dtype
        self.kernel = param(rngs, jax.nn.initializers.truncated_normal(init_std), kernel_shape,
                            kernel_axes, param_dtype)
        self.bias = param(rngs, jax.nn.initializers.zeros, self.kept_shape,
                          tuple(kernel_axes[n_in:]), param_dtype)
        self.lora = (LoRA(equation, kernel_shape, kernel_axes, lora_rank, lora_alpha,
                          dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                     if lora_rank else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        rows = x.shape[:x.ndim - len(self.in_shape)]
        fan_in = math.prod(self.in_shape)
        kernel_IO = self.kernel[...].astype(self.dtype).reshape(fan_in, -1)
        y = rows_matmul(x.astype(self.dtype).reshape(*rows, fan_in), kernel_IO)
        y = y.reshape(*rows, *self.kept_shape) + self.bias[...].astype(self.dtype)
        return y if self.lora is None else y + self.lora(x)


class Embedding(nnx.Module):
    """A lookup table [num_embeddings, D]; also usable as a tied output projection."""

    def __init__(self, num_embeddings: int, features: int, axes: tuple, *, init_std: float,
                 dtype, param_dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.embedding = param(rngs, jax.nn.initializers.truncated_normal(init_std),
                               (num_embeddings, features), axes, param_dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x_BPD: jax.Array) -> jax.Array:
        """Scores of every table row against `x`: the tied output layer (BERT 3.1, Task #1)."""
        return rows_matmul(x_BPD.astype(self.dtype), self.embedding[...].astype(self.dtype).T)


def fmix32(h_X: jax.Array) -> jax.Array:
    """MurmurHash3's finalizer (Appleby 2011): a bijection of uint32 in which every input
    bit flips each output bit with probability about 1/2."""
    h_X = h_X ^ (h_X >> 16)
    h_X = h_X * jnp.uint32(0x85EBCA6B)
    h_X = h_X ^ (h_X >> 13)
    h_X = h_X * jnp.uint32(0xC2B2AE35)
    return h_X ^ (h_X >> 16)


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """32 random bits per element of `shape`: each element's index hashed under a 64-bit
    seed drawn from `key`, fmix32(fmix32(index ^ k0) + k1).

    A counter-based generator (Salmon et al. 2011) like JAX's threefry, with two rounds of a
    cheap mixer instead of threefry's twenty, since threefry's bits dominated dropout's cost
    on a CPU (docs/benchmarks.md). The mask depends on the key and the global index only, so
    it is the same on any device mesh.
    """
    size = math.prod(shape)
    if size >= 2**32:
        raise ValueError(f"hash_bits indexes elements with uint32; shape {shape} is too large")
    k0, k1 = jax.random.bits(key, (2,), jnp.uint32)
    index_X = jax.lax.iota(jnp.uint32, size).reshape(shape)
    return fmix32(fmix32(index_X ^ k0) + k1)


class Dropout(nnx.Dropout):
    """Inverted dropout (Srivastava et al. 2014): in training each element is zeroed with
    probability `rate` and the survivors scaled by 1 / (1 - rate); in eval mode the identity.

    `nnx.Dropout` with the mask drawn by `hash_bits`; `train()`, `eval()` and reseeding the
    "dropout" stream work as for `nnx.Dropout`.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        threshold = min(round(self.rate * 2**32), 2**32 - 1)  # P(bits < threshold) = rate
        keep_X = hash_bits(self.rngs(), x.shape) >= jnp.uint32(threshold)
        return jnp.where(keep_X, x / (1.0 - self.rate), 0).astype(x.dtype)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis, in float32.

    Ba, Kiros & Hinton 2016, "Layer Normalization", eq. 4.
    """
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


class LayerNorm(nnx.Module):
    """Layer norm whose statistics are float32 whatever the compute dtype."""

    def __init__(self, features: int, *, eps: float, dtype, param_dtype):
        self.eps = eps
        self.dtype = dtype
        self.scale = nnx.Param(jnp.ones((features,), param_dtype), logical_axes=("embed",))
        self.bias = nnx.Param(jnp.zeros((features,), param_dtype), logical_axes=("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = layer_norm(x, self.scale[...].astype(jnp.float32),
                       self.bias[...].astype(jnp.float32), self.eps)
        return y.astype(self.dtype)
