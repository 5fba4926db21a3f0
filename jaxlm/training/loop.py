"""The training loop shared by every job (pretraining, fine-tuning): step, log, evaluate,
checkpoint, stop on a signal or early.
"""

from __future__ import annotations

import logging
import math
import signal
import typing

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxlm.config import TrainConfig
from jaxlm.training import metrics, sharding
from jaxlm.training.checkpoint import Checkpointer
from jaxlm.training.integrity import NonFiniteError
from jaxlm.training.state import Fixed, TrainState

log = logging.getLogger("jaxlm")


class StopRequest:
    """Remembers a SIGTERM/SIGINT so the loop can checkpoint and leave at a step boundary."""

    def __init__(self):
        self.signal: int | None = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:  # a second Ctrl-C
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("received %s: saving a checkpoint at the end of this step",
                    signal.Signals(signum).name)

    def requested(self) -> bool:
        """True on every process as soon as any process was signalled."""
        flag = self.signal is not None
        if jax.process_count() == 1:
            return flag
        return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


class EarlyStopping:
    """True once `patience` evaluations in a row have not beaten the best one."""

    def __init__(self, key: str, patience: int, history: list[dict]):
        self.key, self.patience = key, patience
        self.best, self.waited = -math.inf, 0
        for line in history:
            self(line)

    def __call__(self, eval_line: dict) -> bool:
        if eval_line[self.key] > self.best:
            self.best, self.waited = eval_line[self.key], 0
        else:
            self.waited += 1
        return self.waited >= self.patience


def train_loop(train_cfg: TrainConfig, state: TrainState, fixed: Fixed,
               train_step, batches, mesh, *, checkpoints: Checkpointer,
               logger: metrics.MetricsLogger, config: dict,
               evaluate: typing.Callable[[dict], dict],
               stop_early: typing.Callable[[dict], bool] = lambda eval_line: False) -> dict:
    """Steps from `state.step` to `train_cfg.steps`: log every `log_every`, evaluate every
    `eval_every` (and at the end), checkpoint every `checkpoint_every`, at the end, on
    SIGTERM/SIGINT and when `stop_early(eval_line)` says so. Closes `checkpoints` and
    `logger`.

    Args:
      evaluate: params -> held-out metrics; the first objective's accuracy picks the best
        checkpoint.
      config: the run's config as a dict, saved in every checkpoint.

    Returns:
      {"train": last metrics line, "eval": last evaluation, "state": the final state}.

    Raises:
      NonFiniteError: `max_nonfinite_steps` consecutive NaN/inf steps.
    """
    summary: dict = {}
    start = step = int(jax.device_get(state.step))

    def write_due_line():
        line = logger.write_due()
        if line is None:
            return
        summary["train"] = line
        if line["bad_streak"] >= train_cfg.max_nonfinite_steps:
            raise NonFiniteError(
                f"{line['bad_streak']} consecutive steps up to step {line['step']} had a "
                f"non-finite loss or gradient; their updates were skipped. The newest "
                f"checkpoint in {checkpoints.directory} predates them. Lower "
                f"train.learning_rate or use model.dtype=float32.")

    try:
        with StopRequest() as stop:
            logger.restart_clock(step)
            while step < train_cfg.steps:
                batch = sharding.global_batch(next(batches), mesh)
                state, step_metrics = train_step(state, fixed, batch)
                step += 1
                logger.record(step, step_metrics)
                # The interval that ended at the previous step is fetched once this step is
                # queued, so that the device never idles while the host logs.
                write_due_line()
                last = step == train_cfg.steps
                if step == start + 1:
                    logger.restart_clock(step)  # leave compilation out of tokens/s
                if step % train_cfg.log_every == 0 or last:
                    logger.end_interval(step)
                evaluating = bool(train_cfg.eval_every) and (
                    step % train_cfg.eval_every == 0 or last)
                stopping = stop.requested()
                if evaluating or stopping or last or step % train_cfg.checkpoint_every == 0:
                    write_due_line()  # before the evaluation line and the checkpoint
                eval_line = None
                if evaluating:
                    summary["eval"] = eval_line = evaluate(state.params)
                    logger.write_eval(step, eval_line)
                early = eval_line is not None and not last and stop_early(eval_line)
                if step % train_cfg.checkpoint_every == 0 or last or stopping or early:
                    checkpoints.save(step, state, batches, config, eval_line)
                if stopping or early:
                    log.warning("stopped at step %d%s; checkpoint written to %s", step,
                                " (early stopping)" if early else "", checkpoints.directory)
                    break
                if eval_line is not None:
                    logger.restart_clock(step)
    finally:
        try:
            checkpoints.close()
        finally:
            logger.close()
    summary["state"] = state
    return summary


