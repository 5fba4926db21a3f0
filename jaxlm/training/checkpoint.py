"""Checkpoints under `run_dir/checkpoints`, written and read with an Orbax CheckpointManager.

Each step directory holds four items:

    state      the TrainState: params, AdamW state, step, RNG key, skip counters (sharded
               arrays; each host writes its own shards, restore reshards onto any mesh)
    data       each host's data-iterator position (Grain), so the next batch is the right one
    config     the run's whole config as JSON, to refuse resuming a different model
    integrity  a checksum of every state array (`integrity`) and a CRC-32 of each host's
               data-iterator position, checked on restore

Saves are asynchronous (a background thread writes while training goes on) and atomic
(written to a temporary directory, renamed when complete), so a killed run leaves either a
whole checkpoint or a temporary directory that is ignored. A state with NaN or inf is
never saved, and a checkpoint whose arrays no longer match their checksums is set aside as
corrupt like one that cannot be read. Kept: the last
`train.keep_checkpoints` plus the best by held-out accuracy of the first objective (MLM
for BERT, next token for GPT).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import sys
import time
import typing
import zlib
from pathlib import Path

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from jaxlm import storage
from jaxlm.config import ConfigError, ModelConfig, TrainConfig
from jaxlm.data import DataError
from jaxlm.data.loader import reshard_state
from jaxlm.training import integrity, metrics
from jaxlm.training.integrity import NonFiniteError
from jaxlm.training.state import TrainState

log = logging.getLogger(__name__)

# Model fields that may change between a run and its resumption: numerics and memory, not
# the parameters' shapes or meaning.
RESUMABLE_MODEL_CHANGES = ("dtype", "remat")
ITEMS = ("state", "data", "config", "integrity")


class CorruptCheckpoint(ValueError):
    """A checkpoint that reads, but not as it was written."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a lost mount, ...); the ones before it
    are intact, and the partial one is a temporary directory the next run removes."""


@contextlib.contextmanager
def _writing(directory: Path) -> typing.Iterator[None]:
    """Reports a failed write, which Orbax raises from its save threads as any exception type
    (a full disk is a ValueError), as one CheckpointWriteError naming the directory."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - whatever the storage layer raised
        reason = (str(e).splitlines() or [type(e).__name__])[0]  # the OS error ends the line
        raise CheckpointWriteError(f"writing a checkpoint under {directory} failed; the earlier "
                                   f"checkpoints are intact ({reason})") from e


@contextlib.contextmanager
def _closed_loop_callbacks_ignored() -> typing.Iterator[None]:
    """A restore that fails leaves TensorStore reads whose callbacks reach Orbax's closed event
    loop, each printing an "Event loop is closed" traceback or an unretrieved future's error;
    the failure itself is reported in one line."""
    previous, asyncio_level = sys.unraisablehook, logging.getLogger("asyncio").level
    metrics.ignore_closed_loop_callbacks()
    try:
        yield
    finally:
        sys.unraisablehook = previous
        logging.getLogger("asyncio").setLevel(asyncio_level)


class Checkpointer:
    """Saves and restores (state, data iterator, config) for one run directory."""

    def __init__(self, run_dir: str | Path, cfg: TrainConfig,
                 best_metric: str = "eval_mlm_accuracy", finetuning: bool = False,
                 best_from: int = 0):
        self.best_metric = best_metric
        self.best_from = best_from  # earlier steps never count as best (an unfinished pruning)
        self.finetuning = finetuning  # fine-tuning runs save their labels with the config
        self.restart_data = cfg.restart_data
        self.directory = _absolute(run_dir) / "checkpoints"
        self.quarantine = _absolute(run_dir) / "corrupt_checkpoints"
        preserve = policies.AnyPreservationPolicy([
            policies.LatestN(n=cfg.keep_checkpoints),
            policies.BestN(get_metric_fn=lambda m: m[best_metric], reverse=False, n=1,
                           keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preserve,
            best_fn=lambda m: m[best_metric], best_mode="max",  # for best_step()
            enable_async_checkpointing=cfg.async_checkpoint,
            cleanup_tmp_directories=True,  # a save cut short leaves only a temporary dir
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the highest `best_metric`; the newest if none has metrics."""
        return self.manager.best_step() or self.manager.latest_step()

    def save(self, step: int, state, data_iterator, config: dict,
             metrics: dict | None = None) -> None:
        """Starts writing a checkpoint for `step` (returns before the write finishes).

        Raises:
          NonFiniteError: the state holds NaN or inf; nothing is written.
        """
        if step in self.manager.all_steps():
            return
        checksums, bad = integrity.summarize(state)
        if bad:
            raise NonFiniteError(
                f"the state at step {step} holds NaN or inf ({', '.join(bad[:3])}); it was "
                f"not saved, and the newest checkpoint in {self.directory} predates it")
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            config=ocp.args.JsonSave(config),
            integrity=ocp.args.JsonSave({"checksums": checksums,
                                         "data_crc32": _iterator_crc32s(data_iterator)}),
        )
        key = self.best_metric
        best = ({key: metrics[key]} if metrics and key in metrics and step >= self.best_from
                else None)
        with _writing(self.directory):
            self.manager.save(step, args=args, metrics=best, force=True)

    @_closed_loop_callbacks_ignored()
    def restore(self, abstract_state, data_iterator, model_cfg: ModelConfig,
                data_order: dict | None = None, base: dict | None = None):
        """Restores the newest readable checkpoint onto the shardings of `abstract_state`.

        A checkpoint that fails to read is moved to `run_dir/corrupt_checkpoints` with a
        warning, and the next older one is tried; nothing is deleted. A checkpoint that reads
        but cannot continue this run (another model, or a data iterator that the current
        data settings cannot continue) is refused, and nothing is changed.

        Args:
          abstract_state: the TrainState as ShapeDtypeStructs carrying the target
            shardings (possibly a different mesh than the one that saved it).
          data_iterator: the fresh data iterator, set in place to the saved position.
          model_cfg: the model this run builds; a different saved model is an error.
          data_order: the settings that fix the order of the batches, by dotted name
            ("train.batch_size": 16, ...); under `train.restart_data` a change resumes the
            weights and optimizer and leaves `data_iterator` at the start of the data.
          base: what the checkpoint must have been trained on top of ({"base.fingerprint":
            ...} for a LoRA run, whose frozen weights are not in its checkpoints).

        Returns:
          The restored state, or None when there is no checkpoint.

        Raises:
          ConfigError: the checkpoint holds a different model or base, or its data order
            cannot continue (without `train.restart_data`).
        """
        start = data_iterator.get_state()
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                saved = self.manager.restore(step, args=ocp.args.Composite(
                    config=ocp.args.JsonRestore()))["config"]
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
                self._set_aside(step, e)
                continue
            where = self.directory / str(step)
            if ("labels" in saved) != self.finetuning:
                held, wanted = (("a fine-tuning", "pretraining") if "labels" in saved
                                else ("a pretraining", "fine-tuning"))
                raise ConfigError(f"{where} holds {held} run; use another run_dir for "
                                  f"{wanted}. Nothing was changed.")
            check_same_model(saved.get("model", {}), model_cfg, where)
            other_base = changed_settings(saved, base or {})
            if other_base:
                raise ConfigError(f"{where} was trained with other frozen weights (a LoRA "
                                  f"base, a teacher) than this run has ({other_base[0]}); use "
                                  f"the ones it was trained with or another run_dir. Nothing "
                                  f"was changed.")
            changed = changed_settings(saved, data_order or {})
            if changed and not self.restart_data:
                raise _cannot_continue(where, "; ".join(changed))
            try:
                state = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state)))["state"]
                saved_integrity = _saved_integrity(self.manager, step)
                verify(saved_integrity, state)
                if not changed:
                    self._restore_iterator(step, data_iterator, saved_integrity)
            except Exception as e:  # noqa: BLE001 - unreadable unless Grain says it mismatches
                reason = _iterator_mismatch(e)
                if reason is None:
                    data_iterator.set_state(start)  # not at a damaged checkpoint's position
                    self._set_aside(step, e)
                    continue
                if not self.restart_data:
                    raise _cannot_continue(where, reason) from None
                changed = [reason]
            if changed:
                log.warning("%s: the data settings changed (%s); resuming its weights and "
                            "optimizer and reading the data from its start "
                            "(train.restart_data)", where, "; ".join(changed))
            log.info("resumed from %s", where)
            return state
        return None

    def _restore_iterator(self, step: int, data_iterator, saved_integrity: dict) -> None:
        """Sets `data_iterator` to checkpoint `step`'s position: Grain's restore when as many
        processes saved it as run now, else one process's position resharded
        (`loader.reshard_state`), e.g. a run moved to a slice of another size."""
        saved_dir = storage.path(self.directory) / str(step) / "data"
        names = [p.name for p in saved_dir.iterdir()] if saved_dir.is_dir() else []
        found = [re.fullmatch(r"process_\d+-of-(\d+)\.json", name) for name in names]
        count = next((int(m.group(1)) for m in found if m), jax.process_count())
        if count == jax.process_count():
            self.manager.restore(step, args=ocp.args.Composite(
                data=grain.checkpoint.CheckpointRestore(data_iterator)))
            _verify_iterator(saved_integrity, data_iterator)
            return
        saved = (saved_dir / f"process_0-of-{count}.json").read_bytes()
        crcs = saved_integrity.get("data_crc32")
        if crcs is not None and crcs[0] != zlib.crc32(saved):
            raise CorruptCheckpoint("the data-iterator position does not match its CRC-32")
        data_iterator.set_state(reshard_state(saved, 0, count, data_iterator.get_state(),
                                              jax.process_index(), jax.process_count()))
        log.info("%s was saved by %d processes; %d continue its data order",
                 self.directory / str(step), count, jax.process_count())

    def _set_aside(self, step: int, error: Exception) -> None:
        """Moves an unreadable checkpoint out of the way, keeping its files."""
        target = self.quarantine / f"{step}-{int(time.time())}"
        log.warning("checkpoint %s is unreadable (%s); moving it to %s and trying the "
                    "previous one", self.directory / str(step), _summary(error), target)
        if jax.process_index() == 0:
            storage.make_dir(self.quarantine)
            storage.move_dir(self.directory / str(step), target)
        multihost_utils.sync_global_devices(f"jaxlm_set_aside_{step}")
        self.manager.reload()

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        with _writing(self.directory):
            self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


def _absolute(run_dir: str | Path) -> epath.Path:
    """A run directory as Orbax wants it: a bucket URL, or an absolute local path."""
    return storage.path(run_dir if storage.is_url(run_dir) else Path(run_dir).absolute())


def changed_settings(saved: dict, current: dict) -> list[str]:
    """"key: saved X, now Y" for each dotted setting of `current` that the saved config (a
    nested dict) holds with another value."""
    changed = []
    for key, value in current.items():
        section, _, name = key.partition(".")
        if name not in saved.get(section, {}):
            continue
        before = saved[section][name]
        if json.loads(json.dumps(value)) != before:  # tuples are saved as lists
            changed.append(f"{key}: saved {before!r}, now {value!r}")
    return changed


def _summary(error: BaseException) -> str:
    """"Type: first line of the message", for one log line about a checkpoint."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def _cannot_continue(where, reason: str) -> ConfigError:
    return ConfigError(
        f"{where} cannot continue with these data settings ({reason}): its data iterator "
        f"would not resume where it stopped. Restore the setting, use another run_dir, or "
        f"add train.restart_data=true to resume the weights and optimizer and read the data "
        f"from its start. Nothing was changed.")


def _iterator_mismatch(error: BaseException) -> str | None:
    """Grain's first line when it refused a saved iterator that another loader defines
    (its sampler, worker count or data source differ), else None."""
    while error is not None:
        if isinstance(error, DataError):  # from `reshard_state`
            return str(error)
        if isinstance(error, ValueError) and "in checkpoint does not match" in str(error):
            return str(error).splitlines()[0]
        error = error.__cause__ or error.__context__
    return None


def check_same_model(saved: dict, model_cfg: ModelConfig, where) -> None:
    """Raises ConfigError naming each model field that differs from the saved run's."""
    current = json.loads(json.dumps(dataclasses.asdict(model_cfg)))  # tuples saved as lists
    diffs = [f"model.{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in current.items()
             if k not in RESUMABLE_MODEL_CHANGES and k in saved and saved[k] != v]
    if diffs:
        raise ConfigError(
            f"{where} holds a different model ({'; '.join(diffs)}). Use another run_dir "
            f"or the saved model settings; nothing was deleted."
        )


def _saved_integrity(manager, step: int) -> dict:
    """Checkpoint `step`'s integrity item; {} for checkpoints older than it."""
    if not (storage.path(manager.directory) / str(step) / "integrity").is_dir():
        return {}
    return manager.restore(step, args=ocp.args.Composite(
        integrity=ocp.args.JsonRestore()))["integrity"]


def verify(saved_integrity: dict, state) -> None:
    """Raises CorruptCheckpoint when the restored arrays (all of a state, or its fields not
    None) do not match the checksums saved with them (`_saved_integrity`), or hold NaN or
    inf."""
    checksums, bad = integrity.summarize(state)
    changed = integrity.mismatches(saved_integrity.get("checksums", {}), checksums)
    if changed:
        raise CorruptCheckpoint(f"{len(changed)} arrays do not match their checksums "
                                f"({', '.join(changed[:3])})")
    if bad:
        raise CorruptCheckpoint(f"NaN or inf in {', '.join(bad[:3])}")


def _iterator_crc32s(data_iterator) -> list[int]:
    """The CRC-32 of every process's data-iterator state, indexed by process."""
    crc = np.uint32(zlib.crc32(data_iterator.get_state()))
    if jax.process_count() == 1:
        return [int(crc)]
    return [int(c) for c in multihost_utils.process_allgather(crc)]


def _verify_iterator(saved_integrity: dict, data_iterator) -> None:
    """Raises CorruptCheckpoint when the restored data-iterator position of this process is
    not the one saved (its JSON can change and still parse, e.g. one digit of a position)."""
    saved = saved_integrity.get("data_crc32")
    if saved is not None and saved[jax.process_index()] != zlib.crc32(data_iterator.get_state()):
        raise CorruptCheckpoint("the data-iterator position does not match its CRC-32")


def _open_manager(path: str | Path):
    """A read-only manager over `path`, a run directory or its checkpoints/.

    Raises:
      FileNotFoundError: no checkpoint there.
    """
    directory = _absolute(path)
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    missing = FileNotFoundError(f"{path}: no checkpoint found (expected a run directory "
                                f"written by train.py or jaxlm.finetune, or its checkpoints/ "
                                f"directory)")
    if not directory.is_dir():
        raise missing
    # A fine-tuning run saves one metric with each checkpoint, the one it keeps the best by.
    manager = ocp.CheckpointManager(
        directory, item_names=ITEMS,
        options=ocp.CheckpointManagerOptions(create=False, read_only=True,
                                             best_fn=lambda m: next(iter(m.values())),
                                             best_mode="max"))
    if manager.latest_step() is None:
        manager.close()
        raise missing
    return manager


def open_latest(path: str | Path):
    """A read-only manager over `path` (a run directory or its checkpoints/), the newest
    step and that step's saved config (a dict).

    Raises:
      FileNotFoundError: no checkpoint under `path`.
    """
    manager = _open_manager(path)
    step = manager.latest_step()
    saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    log.info("loading step %d from %s", step, manager.directory)
    return manager, step, saved["config"]


def restore_params(manager, step: int, abstract_state):
    """The trained parameters of checkpoint `step`, placed like `abstract_state.params`; the
    optimizer state is not read (inference needs none of it, and it is twice their size).

    Raises:
      CorruptCheckpoint: the arrays do not match their checksums.
    """
    item = {"params": abstract_state.params}
    params = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)))["state"]["params"]
    verify(_saved_integrity(manager, step), TrainState(
        params=params, opt_state=None, step=None, rng=None, skipped=None, bad_streak=None))
    return params


@_closed_loop_callbacks_ignored()
def restore_newest(path: str | Path, build: typing.Callable[[dict], typing.Any],
                   step: int | None = None, best: bool = False):
    """The parameters of the newest checkpoint under `path` (or of `step`) that reads and
    matches its checksums, trying older ones with a warning line each, as training does.

    Args:
      build: saved config -> the StateSetup to restore onto; what it raises is passed on.
      best: try first the checkpoint with the best validation metric (fine-tuning runs).

    Returns:
      (params, setup, step, saved config).

    Raises:
      FileNotFoundError: no checkpoint, or none that reads.
    """
    manager = _open_manager(path)
    tried = []
    try:
        candidates = [step] if step is not None else sorted(manager.all_steps())[::-1]
        best_step = manager.best_step() if best and step is None else None
        if best_step is not None:
            candidates.insert(0, candidates.pop(candidates.index(best_step)))
        for candidate in candidates:
            try:
                saved = manager.restore(candidate, args=ocp.args.Composite(
                    config=ocp.args.JsonRestore()))["config"]
            except Exception as e:  # noqa: BLE001 - an unreadable checkpoint is skipped
                tried.append(_unreadable(path, candidate, e))
                continue
            setup = build(saved)
            try:
                return restore_params(manager, candidate, setup.abstract), setup, candidate, saved
            except Exception as e:  # noqa: BLE001
                tried.append(_unreadable(path, candidate, e))
    finally:
        manager.close()
    raise FileNotFoundError(f"{path}: no readable checkpoint ({'; '.join(tried)})")


def _unreadable(path, step: int, error: Exception) -> str:
    reason = f"step {step}: {_summary(error)}"
    log.warning("%s, %s; trying the previous checkpoint", path, reason)
    return reason
