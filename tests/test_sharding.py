"""Mesh construction, the logical-axis rules and the batch assembly."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from benchmarks import memory
from jaxlm.config import ConfigError, MeshConfig
from jaxlm.models.bert import BertForPreTraining
from jaxlm.nn import layers
from jaxlm.training import sharding


def test_mesh_fills_the_minus_one_axis():
    mesh = sharding.make_mesh(MeshConfig(data=-1, fsdp=2, tensor=2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert sharding.data_parallel_size(mesh) == 4


@pytest.mark.parametrize("cfg, message", [
    (MeshConfig(data=3, fsdp=1, tensor=1), "= 3 devices, but 8 are available"),
    (MeshConfig(data=-1, fsdp=3, tensor=1), "mesh.data=-1: the other axes .3 devices. do not"),
])
def test_mesh_that_does_not_fit_the_devices_is_an_error(cfg, message):
    with pytest.raises(ConfigError, match=message):
        sharding.make_mesh(cfg)


def test_rules_shard_embed_on_fsdp_and_heads_mlp_vocab_on_tensor(tiny_config):
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    abstract = nnx.state(nnx.eval_shape(lambda: BertForPreTraining(tiny_config,
                                                                     rngs=nnx.Rngs(0))),
                         nnx.Param)
    specs = sharding.param_specs(abstract, mesh)
    layer = specs["bert"]["layers"][0]
    # query kernel [D, N, H]: embed -> fsdp, heads -> tensor
    assert layer["attention"]["query"]["kernel"] == P("fsdp", "tensor", None)
    assert layer["attention"]["output"]["kernel"] == P("tensor", None, "fsdp")
    assert layer["mlp"]["intermediate"]["kernel"] == P("fsdp", None)  # F=37 is odd: replicated
    assert layer["attention_norm"]["scale"] == P("fsdp")
    # V=99 does not split over tensor=2, D=32 does over fsdp=2
    assert specs["bert"]["embeddings"]["word_embeddings"]["embedding"] == P(None, "fsdp")


def test_logical_to_spec_uses_each_mesh_axis_once():
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
    assert sharding.logical_to_spec(("embed", "embed"), (8, 8), mesh) == P("fsdp", None)
    assert sharding.logical_to_spec(("mlp", "heads"), (4, 4), mesh) == P("tensor", None)
    with pytest.raises(ValueError, match="logical axis 'rows' has no rule"):
        sharding.logical_to_spec(("rows",), (8,), mesh)


def test_batch_size_must_split_over_data_parallel_devices():
    mesh = sharding.make_mesh(MeshConfig(data=4, fsdp=2, tensor=1))
    sharding.check_batch_size(32, 4, mesh)
    with pytest.raises(ConfigError, match=r"train.batch_size: 32 \(/ train.grad_accum_steps=8 "
                                          r"= 4 per micro-batch\) is not divisible by .* = 8"):
        sharding.check_batch_size(32, 8, mesh)


def test_global_batch_is_sharded_over_data_and_fsdp():
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    local = {"input_ids": np.arange(8 * 3, dtype=np.int32).reshape(8, 3)}
    batch = sharding.global_batch(local, mesh)
    np.testing.assert_array_equal(np.asarray(batch["input_ids"]), local["input_ids"])
    assert batch["input_ids"].sharding.spec == P(("data", "fsdp"))
    rows = {tuple(np.asarray(s.data)[:, 0]) for s in batch["input_ids"].addressable_shards}
    assert rows == {(0, 3), (6, 9), (12, 15), (18, 21)}  # 4 row blocks, each on 2 devices
    assert jax.device_count() == 8


def test_tagged_activations_are_split_over_the_batch_while_a_step_is_traced():
    mesh = sharding.make_mesh(MeshConfig(fsdp=8))

    @jax.jit
    def double(x_BTD):
        with sharding.activation_layout(mesh):
            return layers.with_logical_axes(2 * x_BTD, ("batch", "length", "embed"))

    out = double(jax.numpy.ones((8, 4, 16)))
    assert out.sharding.is_equivalent_to(
        jax.sharding.NamedSharding(mesh, P(("data", "fsdp"), None, None)), 3)
    assert out.addressable_shards[0].data.shape == (1, 4, 16)
    x = jax.numpy.ones((8, 4, 16))
    assert layers.with_logical_axes(x, ("batch", "length", "embed")) is x  # no step, no mesh


def test_fsdp_step_keeps_activations_batch_split(tiny_config):
    """Left to XLA, the fsdp split of the weights spread into the activations and every
    device held the whole batch's (BERT-large fsdp=8: 8.6 GB per device, 4.0 GB with the
    layout rule). With activations dominating, fsdp=8 must not need more temporaries than
    data=8, give or take the few small buffers its gathers add (under 1%; a batch spread over
    every device would need up to 8x)."""
    cfg = dataclasses.replace(tiny_config, max_position_embeddings=256)
    report = memory.memory(cfg, batch_size=8, seq_len=256, meshes=["data=8", "fsdp=8"])
    data, fsdp = report["meshes"]["data=8"], report["meshes"]["fsdp=8"]
    assert fsdp["temporaries"] <= 1.01 * data["temporaries"]
