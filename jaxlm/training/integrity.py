"""Integrity of the train state: a checksum per array, written with each checkpoint and
checked on restore, and the finiteness of every array, checked before a state is saved.

A checkpoint's bytes can change after it was written (a bad disk, a copy cut short, a
stray write) and still decode, with other values; training would then go on from them. The
checksum of an array is the uint32 sum over its elements of fmix32(bits ^ fmix32(index)),
with `index` the element's position in the whole array: any changed element changes it
with probability 1 - 2^-32, and since integer sums do not depend on their order, it is the
same on every mesh the array is sharded over.
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.nn.layers import fmix32


class NonFiniteError(RuntimeError):
    """NaN or inf in the training: consecutive steps' losses or gradients, or a state that
    would be saved."""


def _bits(x: jax.Array) -> jax.Array:
    """The bit pattern of each element, as uint32 (a bool as 0 or 1)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def checksum(x: jax.Array) -> jax.Array:
    """uint32 []: the array's checksum (module docstring), computed shard by shard."""
    index = jnp.zeros(x.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(x.ndim)):  # row-major position, without a reshape
        index = index + jax.lax.broadcasted_iota(jnp.uint32, x.shape, axis) * jnp.uint32(stride)
        stride *= x.shape[axis]
    return jnp.sum(fmix32(_bits(x) ^ fmix32(index)), dtype=jnp.uint32)


@jax.jit
def _summarize(tree):
    finite = jax.tree.map(
        lambda x: jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact)
        else jnp.bool_(True), tree)
    return jax.tree.map(checksum, tree), finite


def summarize(tree) -> tuple[dict[str, int], list[str]]:
    """({array name: checksum}, [names of arrays holding NaN or inf]) of a pytree of arrays,
    named by their path ("params['bert']['embeddings']...")."""
    sums, finite = jax.device_get(_summarize(tree))
    named = jax.tree_util.tree_flatten_with_path(sums)[0]
    checksums = {jax.tree_util.keystr(path): int(value) for path, value in named}
    bad = [jax.tree_util.keystr(path)
           for path, ok in jax.tree_util.tree_flatten_with_path(finite)[0] if not np.all(ok)]
    return checksums, bad


def mismatches(saved: dict[str, int], restored: dict[str, int]) -> list[str]:
    """Names of the restored arrays whose checksum is not the saved one (none when nothing
    was saved: checkpoints older than the checksums)."""
    if not saved:
        return []
    return [name for name, value in restored.items() if saved.get(name) != value]


def weights_fingerprint(weights: dict[str, np.ndarray]) -> str:
    """A hash of every weight's name and float32 bytes: which frozen weights a run was
    trained on."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(weights[name], np.float32).tobytes())
    return digest.hexdigest()[:32]
