"""Orbax checkpoints: restore onto another mesh, corrupt checkpoints, the model guard."""

import dataclasses
import logging

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxlm import data
from jaxlm.config import ConfigError, MeshConfig, TrainConfig, load
from jaxlm.training import checkpoint, optim, sharding
from jaxlm.training.checkpoint import Checkpointer
from jaxlm.training.state import setup_state


@pytest.fixture
def setup(run_overrides):
    cfg = load(None, run_overrides)
    prepared = data.prepare(cfg.data, seed=0)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=prepared.vocab_size)
    tx = optim.make_optimizer(cfg.train)

    def on(mesh_cfg):
        mesh = sharding.make_mesh(mesh_cfg)
        state = setup_state(model_cfg, 0, tx, mesh)
        loader = data.make_loader(prepared, "train", 16, seed=0, shuffle=True, num_epochs=None)
        return state, iter(loader)

    return cfg, model_cfg, on


def test_restore_onto_a_different_mesh(setup, tmp_path):
    cfg, model_cfg, on = setup
    saver_setup, batches = on(MeshConfig(data=8))
    state = saver_setup.init()
    next(batches)
    saver = Checkpointer(tmp_path, TrainConfig(async_checkpoint=True))
    saver.save(7, state, batches, {"model": dataclasses.asdict(model_cfg)})
    saver.close()
    expected_next = next(batches)

    target, fresh = on(MeshConfig(data=1, fsdp=2, tensor=4))
    restored = Checkpointer(tmp_path, TrainConfig()).restore(target.abstract, fresh, model_cfg)
    for a, b, sh in zip(jax.tree.leaves(state), jax.tree.leaves(restored),
                        jax.tree.leaves(target.shardings), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert b.sharding == sh
    query = restored.params["bert"]["layers"][0]["attention"]["query"]["kernel"]
    assert query.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    for key, value in next(fresh).items():  # the data iterator resumes too
        np.testing.assert_array_equal(value, expected_next[key])


def test_corrupt_latest_falls_back_and_keeps_the_files(setup, tmp_path, caplog):
    cfg, model_cfg, on = setup
    state_setup, batches = on(MeshConfig(data=8))
    state = state_setup.init()
    saver = Checkpointer(tmp_path, TrainConfig(async_checkpoint=False))
    config = {"model": dataclasses.asdict(model_cfg)}
    saver.save(1, state, batches, config)
    saver.save(2, state, batches, config)
    saver.close()
    victims = [p for p in (tmp_path / "checkpoints" / "2" / "state").rglob("*") if p.is_file()]
    for path in victims:
        path.write_bytes(b"\x00garbage")

    with caplog.at_level(logging.WARNING):
        restored = Checkpointer(tmp_path, TrainConfig()).restore(state_setup.abstract, batches,
                                                                 model_cfg)
    assert restored is not None
    assert "checkpoint" in caplog.text and "is unreadable" in caplog.text
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()] == ["1"]
    moved = list((tmp_path / "corrupt_checkpoints").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("2-")
    assert len([p for p in moved[0].rglob("*") if p.is_file()]) >= len(victims)


def test_a_different_model_or_kind_of_run_is_refused(setup, tmp_path):
    cfg, model_cfg, on = setup
    state_setup, batches = on(MeshConfig(data=8))
    saver = Checkpointer(tmp_path, TrainConfig(async_checkpoint=False))
    saver.save(1, state_setup.init(), batches, {"model": dataclasses.asdict(model_cfg)})
    saver.close()
    other = dataclasses.replace(model_cfg, num_layers=3)
    with pytest.raises(ConfigError, match="model.num_layers: saved 2, now 3"):
        Checkpointer(tmp_path, TrainConfig()).restore(state_setup.abstract, batches, other)
    with pytest.raises(ConfigError, match="holds a pretraining run; use another run_dir for "
                                          "fine-tuning"):
        Checkpointer(tmp_path, TrainConfig(), finetuning=True).restore(
            state_setup.abstract, batches, model_cfg)
    assert (tmp_path / "checkpoints" / "1").is_dir()  # left where it was


def test_inference_reads_the_parameters_only(setup, tmp_path):
    """`restore_params` reads no optimizer state: a checkpoint whose optimizer state has
    another structure than the one this setup would build (so a whole-state restore fails)
    still gives its parameters, checked against their checksums."""
    cfg, model_cfg, on = setup
    state_setup, batches = on(MeshConfig(data=8))
    state = state_setup.init()
    other = dataclasses.replace(state, opt_state={"momentum": state.params})
    saver = Checkpointer(tmp_path, TrainConfig(async_checkpoint=False))
    saver.save(1, other, batches, {"model": dataclasses.asdict(model_cfg)})
    saver.close()
    whole = checkpoint._open_manager(tmp_path)
    with pytest.raises(ValueError):
        whole.restore(1, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state_setup.abstract)))
    whole.close()
    manager = checkpoint._open_manager(tmp_path)
    params = checkpoint.restore_params(manager, 1, state_setup.abstract)
    manager.close()
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
