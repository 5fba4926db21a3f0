"""Pretraining, the job behind `python train.py`: data, mesh, state, loop, checkpoints.

One function, `run(cfg)`, does the whole job the same way on one CPU, a GPU box or a
multi-host TPU slice, for BERT (MLM + NSP), GPT (next token) or the encoder-decoder (T5
span corruption), by `model.kind` (`jaxlm.objectives.registry`):

1. prepare the data (tokenizer + instances, cached) and size the vocabulary from it;
2. build the mesh, the train state's shardings and the jitted steps (`jaxlm.training`);
3. resume from the newest readable checkpoint in `run_dir/checkpoints`, or initialize;
4. train (`training.loop.train_loop`, shared with `jaxlm.finetune`), logging every
   `log_every` steps, evaluating every `eval_every`, checkpointing every
   `checkpoint_every` and at the end; SIGTERM/SIGINT save at the next step boundary.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import jax
from flax import nnx
from jax.experimental import multihost_utils

from jaxlm import data, storage
from jaxlm.compression import distill
from jaxlm.config import Config, ConfigError, load, to_dict
from jaxlm.data import load_tokenizer, preparation
from jaxlm.inference.load import load_teacher
from jaxlm.objectives import tasks
from jaxlm.objectives.registry import pretraining_task
from jaxlm.training import host, metrics, optim, sharding
from jaxlm.training.checkpoint import Checkpointer
from jaxlm.training.integrity import NonFiniteError
from jaxlm.training.loop import train_loop
from jaxlm.training.plot import plot_run
from jaxlm.training.run_dir import RunDirInUse, exclusive
from jaxlm.training.state import setup_state
from jaxlm.training.step import make_eval_step, make_train_step

log = logging.getLogger("jaxlm")

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "bert_tiny.yaml"


def prepare_data(cfg: Config) -> data.Prepared:
    """Process 0 builds the data first; the others then find it (or build their own copy
    when hosts share no filesystem)."""
    recipe = pretraining_task(cfg.model.kind).recipe
    if jax.process_index() == 0:
        prepared = data.prepare(cfg.data, seed=cfg.train.seed, recipe=recipe)
    multihost_utils.sync_global_devices("jaxlm_data_prepared")
    if jax.process_index() != 0:
        prepared = data.prepare(cfg.data, seed=cfg.train.seed, recipe=recipe)
    return prepared


def resolve_model(cfg: Config, prepared: data.Prepared) -> Config:
    """The model's vocabulary follows the tokenizer; its positions must cover a sequence."""
    if prepared.max_seq_length > cfg.model.max_position_embeddings:
        raise ConfigError(
            f"data.max_seq_length={prepared.max_seq_length} exceeds "
            f"model.max_position_embeddings={cfg.model.max_position_embeddings}"
        )
    if cfg.model.vocab_size != prepared.vocab_size:
        log.info("model.vocab_size set to %d by the tokenizer %s", prepared.vocab_size,
                 prepared.tokenizer_path)
    model = dataclasses.replace(cfg.model, vocab_size=prepared.vocab_size)
    return dataclasses.replace(cfg, model=model)


def data_order(cfg: Config) -> dict:
    """The settings that fix which batch comes next, by dotted name: a checkpoint's data
    iterator continues only under the same ones."""
    settings = {f"data.{k}": v for k, v in to_dict(cfg.data).items()
                if k not in preparation.NOT_HASHED}
    return {**settings, "train.batch_size": cfg.train.batch_size, "train.seed": cfg.train.seed}


def held_out_metrics(eval_step, task: tasks.Task, params, fixed, prepared: data.Prepared,
                     cfg: Config, mesh) -> dict:
    """Loss, accuracy and perplexity on (the first `eval_steps` batches of) the held-out
    split, read in stored order so every evaluation sees the same examples."""
    loader = data.make_loader(prepared, "eval", cfg.train.batch_size, seed=cfg.train.seed,
                              shuffle=False, num_epochs=1)
    totals = None
    for i, local in enumerate(loader):
        if cfg.train.eval_steps and i == cfg.train.eval_steps:
            break
        sums = jax.device_get(eval_step(params, fixed, sharding.global_batch(local, mesh)))
        totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
    return tasks.eval_metrics(task, totals)


def run(cfg: Config) -> dict:
    """Trains to `cfg.train.steps`, resuming if `run_dir` holds checkpoints.

    Returns:
      The last train metrics line and the last evaluation, plus `wall_s`.

    Raises:
      ConfigError: a setting that cannot work (mesh vs devices, batch vs mesh, run_dir
        holding another model, or a checkpoint whose data order cannot continue).
      RunDirInUse: another run holds `run_dir`.
      NonFiniteError: `train.max_nonfinite_steps` consecutive NaN/inf steps; the newest
        checkpoint is from before them.
    """
    started = time.perf_counter()
    sharding.initialize_distributed(cfg.mesh)
    mesh = sharding.make_mesh(cfg.mesh)
    sharding.check_batch_size(cfg.train.batch_size, cfg.train.grad_accum_steps, mesh)
    prepared = prepare_data(cfg)
    cfg = resolve_model(cfg, prepared)
    run_dir = storage.path(cfg.run_dir)
    log.info("mesh %s over %d devices (%s), %d processes", dict(mesh.shape), mesh.size,
             jax.devices()[0].device_kind, jax.process_count())

    task, trainable, teacher = pretraining_task(cfg.model.kind), nnx.Param, None
    if cfg.distill.teacher:
        try:
            teacher = load_teacher(cfg.distill.teacher, masked_lm=True)
        except ValueError as e:  # not a pretrained BERT
            raise ConfigError(f"distill.teacher: {e}") from None
        distill.check_compatible(teacher, distill.MASKED_LM, (),
                                 load_tokenizer(prepared.tokenizer_path))
        task = distill.distillation_task(task, teacher, cfg.distill, cfg.model)
        trainable = distill.student_only(trainable)
    tx = optim.make_optimizer(cfg.train)
    setup = setup_state(cfg.model, cfg.train.seed, tx, mesh, task, trainable)
    fixed = setup.fixed if teacher is None else distill.place_teacher(setup, teacher)
    train_step = make_train_step(setup, tx, optim.learning_rate_schedule(cfg.train), mesh,
                                 cfg.train.grad_accum_steps)
    eval_step = make_eval_step(setup, mesh)
    batches = iter(data.make_loader(prepared, "train", cfg.train.batch_size,
                                    seed=cfg.train.seed, shuffle=True, num_epochs=None))
    if cfg.train.eval_every:  # fail now, not after an hour, if the eval split is too small
        data.make_loader(prepared, "eval", cfg.train.batch_size, seed=cfg.train.seed,
                         shuffle=False, num_epochs=1)

    # Held from the first write into run_dir to the end; the checks that can refuse (the
    # restore's model and data order) come before anything in it is changed.
    with exclusive(run_dir):
        checkpoints = Checkpointer(run_dir, cfg.train,
                                  best_metric=f"eval_{task.objectives[0]}_accuracy")
        # The teacher is not in the checkpoints: a distilled run resumes only with the same.
        base = {"teacher.fingerprint": teacher.fingerprint} if teacher is not None else {}
        state = checkpoints.restore(setup.abstract, batches, cfg.model, data_order(cfg), base)
        start = 0 if state is None else int(jax.device_get(state.step))
        if start > cfg.train.steps:
            raise ConfigError(f"{checkpoints.directory} holds step {start}, past "
                              f"train.steps={cfg.train.steps}; raise train.steps to train "
                              f"further. Nothing was changed.")
        if jax.process_index() == 0:  # what generation and fill-mask decode with
            storage.copy_file(prepared.tokenizer_path, run_dir / "tokenizer.json")
        state = setup.init() if state is None else state
        if start:
            log.info("resuming at step %d of %d from %s", start, cfg.train.steps,
                     checkpoints.directory)
        shapes = {k: (cfg.train.batch_size, *row) for k, row in prepared.row_shapes().items()}
        logger = metrics.MetricsLogger(
            run_dir, start, cfg.train.steps, tokens_per_step=task.tokens(shapes),
            flops_per_step=task.flops(cfg.model, shapes),
            peak=metrics.peak_flops(), keys=tasks.train_metric_keys(task),
            tensorboard=cfg.train.tensorboard, progress_bar=cfg.train.progress_bar)
        saved_config = {**to_dict(cfg),
                        **({"teacher": teacher.record()} if teacher is not None else {})}
        summary = train_loop(
            cfg.train, state, fixed, train_step, batches, mesh, checkpoints=checkpoints,
            logger=logger, config=saved_config,
            evaluate=lambda params: held_out_metrics(eval_step, task, params, fixed,
                                                     prepared, cfg, mesh))
        if jax.process_index() == 0 and (run_dir / "metrics.jsonl").exists():
            summary["plot"] = str(plot_run(run_dir))
    summary["wall_s"] = time.perf_counter() - started
    return summary


def parse_args(argv: list[str]) -> Config:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Pretrain BERT (masked LM + next sentence prediction) "
                                     "or GPT (next token, model.kind=gpt).",
        epilog="Example: python train.py --config configs/bert_mini.yaml train.steps=2000 "
               "mesh.data=-1 mesh.tensor=2")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="YAML config (default: configs/bert_tiny.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="override any config field, e.g. train.steps=100")
    args = parser.parse_args(argv)
    return load(args.config, args.overrides)


def main(argv: list[str] | None = None) -> int:
    host.keep_freed_memory()  # before JAX starts its CPU client
    host.cache_compilations()
    metrics.setup_logging()
    try:
        summary = run(parse_args(sys.argv[1:] if argv is None else argv))
    except (ConfigError, data.DataError, NonFiniteError, OSError, RunDirInUse,
            metrics.MetricsFileError) as e:  # OSError: a full disk, a missing bucket, ...
        log.error("%s", e)
        return 1
    if jax.process_index() == 0:
        if "train" not in summary:
            print("done: nothing to train, the run is at train.steps already "
                  f"(raise train.steps to train further) wall={summary['wall_s']:.0f}s")
            return 0
        final = {**summary.get("train", {}), **summary.get("eval", {})}
        shown = ("step", "loss", *(k for k in final if k.startswith("eval_")
                                   and k.endswith("_accuracy")), "eval_perplexity")
        print("done: " + " ".join(f"{k}={final[k]:.4g}" for k in shown if k in final)
              + f" wall={summary['wall_s']:.0f}s" + (f" plot={summary['plot']}"
                                                     if "plot" in summary else ""))
    return 0
