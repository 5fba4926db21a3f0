"""Fine-tuning a pretrained BERT for a task (BERT 4): `python -m jaxlm.finetune`.

    python -m jaxlm.finetune --config configs/finetune_classify.yaml init_from=runs/bert_tiny
    python -m jaxlm.finetune --config configs/finetune_ner.yaml init_from=path/to/hf_bert
    python -m jaxlm.finetune --config configs/finetune_qa.yaml finetune.lora_rank=8

1. load the pretrained encoder (a jaxlm run or a Hugging Face directory) and its tokenizer;
2. read the task's labelled files (`jaxlm.finetuning`: sentences and labels, tagged words,
   SQuAD questions), split, tokenize; labels and tags come from the training split;
3. build the task's head on the encoder (`BertForSequenceClassification`,
   `BertForTokenClassification`, `BertForQuestionAnswering`): encoder weights from
   `init_from`, a fresh head; with `finetune.lora_rank` > 0 only the LoRA adapters and the
   head are trained and checkpointed, the encoder stays frozen;
4. train with the shared loop (`training.loop.train_loop`: the same jitted step, sharding,
   metrics and checkpoints as pretraining), scoring validation every epoch, keeping the best
   checkpoint by `finetune.metric` and stopping after `finetune.patience` epochs without
   improvement;
5. reload the best checkpoint and write the scores of validation and test to
   `run_dir/results.json`.

With `distill.teacher` (`python -m jaxlm.distill`) a fine-tuned teacher rides along in step 3
and its soft targets join the loss (`jaxlm.compression.distill`); without `init_from` the
student is built from the teacher's layers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
import typing
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from jaxlm import storage
from jaxlm.compression import distill, prune
from jaxlm.config import ConfigError, FinetuneConfig, load, to_dict
from jaxlm.data import DataError, batching, load_tokenizer
from jaxlm.finetuning import TASK_MODULES
from jaxlm.finetuning.common import TaskData
from jaxlm.inference.load import Pretrained, load_pretrained, load_teacher
from jaxlm.objectives import tasks
from jaxlm.objectives.registry import finetuning_task
from jaxlm.training import host, metrics, optim, sharding
from jaxlm.training.checkpoint import Checkpointer, restore_params
from jaxlm.training.integrity import NonFiniteError
from jaxlm.training.loop import EarlyStopping, train_loop
from jaxlm.training.plot import plot_run
from jaxlm.training.run_dir import RunDirInUse, exclusive
from jaxlm.training.state import LORA_TRAINABLE, count_params, load_weights, setup_state
from jaxlm.training.step import make_eval_step, make_train_step

log = logging.getLogger("jaxlm")

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "finetune_classify.yaml"


def student_from(teacher: distill.Teacher, num_layers: int) -> Pretrained:
    """The student built from the teacher's layers (`distill.student_from_teacher`); 0
    layers = half the teacher's."""
    config, weights = distill.student_from_teacher(
        teacher, num_layers or max(1, teacher.config.num_layers // 2))
    return Pretrained(config, weights, teacher.tokenizer_path, teacher.source, None)


def check_continuation(pretrained: Pretrained, init_from: str, task: str,
                       labels: tuple[str, ...]) -> None:
    """Raises ConfigError unless a fine-tuned `init_from` was trained for `task` with the
    same labels in the same order: fine-tuning it further keeps its head."""
    if pretrained.task != task or (pretrained.labels and pretrained.labels != tuple(labels)):
        raise ConfigError(f"init_from={init_from} is fine-tuned for {pretrained.task} with "
                          f"labels {list(pretrained.labels)[:8]}; training it further needs "
                          f"finetune.task={task} data with the same labels in the same "
                          f"order (got {list(labels)[:8]})")


def pruned(pretrained: Pretrained, cfg: FinetuneConfig, data: TaskData) -> Pretrained:
    """`pretrained` without the heads and MLP neurons that matter least to its loss on the
    validation split (`compression.prune.prune_model`).

    Raises:
      ConfigError: `pretrained` is not fine-tuned: importance is the gradient of its task's
        loss.
    """
    if pretrained.task is None:
        raise ConfigError(f"prune.heads and prune.neurons score each head by the gradient of "
                          f"the task's loss: init_from={cfg.init_from} must be a model "
                          f"fine-tuned for {cfg.finetune.task}")
    task = finetuning_task(cfg.finetune.task, len(data.labels), 0.0)
    config, weights = prune.prune_model(
        task, pretrained.config, pretrained.weights,
        lambda: batching.eval_loader(data.arrays["validation"], cfg.train.batch_size),
        cfg.prune.heads, cfg.prune.neurons)
    log.info("pruned: heads per layer %s, MLP width per layer %s", list(config.layer_heads),
             list(config.layer_intermediate))
    return dataclasses.replace(pretrained, config=config, weights=weights)


def split_scores(predict, params, fixed, data: TaskData, split: str, batch_size: int,
                 task: tasks.Task, mesh, per_position: bool) -> dict:
    """Loss and the task's scores (`eval_`-prefixed) of one split; `per_position`: the head
    has outputs at every position (tags, answer spans), padded back to the split's length."""
    arrays = data.arrays[split]
    N, T = arrays["input_ids"].shape
    totals, outputs = None, []
    for local in batching.eval_loader(arrays, batch_size):
        sums, out = jax.device_get(predict(params, fixed, sharding.global_batch(local, mesh)))
        totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
        if per_position:  # no score reads past a row's length
            out = jax.tree.map(lambda x: np.pad(x, [(0, 0), (0, T - x.shape[1])]
                                                + [(0, 0)] * (x.ndim - 2)), out)
        outputs.append(out)
    order = batching.eval_order(arrays)

    def in_split_order(*parts):
        sorted_rows = np.concatenate(parts)[:N]  # the rest are the last batch's padding
        rows = np.empty_like(sorted_rows)
        rows[order] = sorted_rows
        return rows

    line = tasks.eval_metrics(task, totals)
    line.pop("eval_perplexity")
    return {**line, **{f"eval_{k}": v for k, v in data.score(
        split, jax.tree.map(in_split_order, *outputs)).items()}}


def data_order(cfg: FinetuneConfig) -> dict:
    """The settings that fix which batch comes next, by dotted name (see `pretrain`)."""
    settings = {f"data.{k}": v for k, v in to_dict(cfg.data).items() if k != "cache_dir"}
    return {**settings, "train.batch_size": cfg.train.batch_size, "train.seed": cfg.train.seed,
            "finetune.epochs": cfg.finetune.epochs}


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tunes `cfg.init_from` on the labelled data; resumes if `run_dir` holds
    checkpoints.

    Returns:
      {"task", "validation": scores, "test": scores, "best_step", "labels", "sizes", "notes",
      "trainable_params", "total_params", "epoch_s", "epochs_s", "wall_s"}, also written to
      run_dir/results.json. "epochs_s" holds the seconds of each epoch this call ran, its
      validation included: the first one also compiles the steps.

    Raises:
      RunDirInUse: another run holds `run_dir`.
    """
    started = time.perf_counter()
    sharding.initialize_distributed(cfg.mesh)
    mesh = sharding.make_mesh(cfg.mesh)
    teacher = load_teacher(cfg.distill.teacher) if cfg.distill.teacher else None
    pretrained = (student_from(teacher, cfg.distill.student_layers)
                  if teacher is not None and not cfg.init_from else load_pretrained(cfg.init_from))
    tokenizer = load_tokenizer(pretrained.tokenizer_path)
    T = cfg.data.max_seq_length
    if T > pretrained.config.max_position_embeddings:
        raise ConfigError(f"data.max_seq_length={T} exceeds the model's "
                          f"max_position_embeddings={pretrained.config.max_position_embeddings}")
    data = TASK_MODULES[cfg.finetune.task].read(cfg, tokenizer)
    for name, notes in data.notes.items():
        if any(notes.values()):
            log.warning("%s: %s", name.replace("_", " "), notes)
    log.info("%s: %d labels; %s examples", cfg.finetune.task, len(data.labels), data.sizes)
    if teacher is not None:
        distill.check_compatible(teacher, cfg.finetune.task, data.labels, tokenizer)
    if pretrained.task is not None:
        check_continuation(pretrained, cfg.init_from, cfg.finetune.task, data.labels)
    if cfg.prune.structured:
        pretrained = pruned(pretrained, cfg, data)

    B = cfg.train.batch_size
    sharding.check_batch_size(B, cfg.train.grad_accum_steps, mesh)
    rows = len(data.arrays["train"]["example_weights"])
    steps_per_epoch = rows // B
    if steps_per_epoch == 0:
        raise DataError(f"{rows} training rows are fewer than one batch of "
                        f"train.batch_size={B}")
    steps = cfg.finetune.epochs * steps_per_epoch
    train_cfg = dataclasses.replace(
        cfg.train, steps=steps, warmup_steps=round(cfg.finetune.warmup_fraction * steps),
        eval_every=steps_per_epoch, checkpoint_every=steps_per_epoch)
    lora = cfg.finetune.lora_rank
    model_cfg = dataclasses.replace(pretrained.config, lora_rank=lora,
                                    lora_alpha=cfg.finetune.lora_alpha)
    task = finetuning_task(cfg.finetune.task, len(data.labels), cfg.finetune.classifier_dropout)
    trainable_filter = LORA_TRAINABLE if lora else nnx.Param
    if teacher is not None:
        task = distill.distillation_task(task, teacher, cfg.distill, model_cfg)
        trainable_filter = distill.student_only(trainable_filter)
    tx = optim.make_optimizer(train_cfg)
    if cfg.prune.sparsity:
        tx = optax.chain(tx, prune.magnitude_pruning(
            cfg.prune.sparsity, round(cfg.prune.begin * steps), round(cfg.prune.end * steps),
            cfg.prune.every))
    setup = setup_state(model_cfg, cfg.train.seed, tx, mesh, task, trainable_filter)
    trainable = count_params(setup.model.abstract_params)
    total = trainable + count_params(setup.model.abstract_frozen)
    fixed = setup.fixed
    if teacher is not None:
        total -= count_params(setup.model.abstract_frozen["teacher"])
        fixed = distill.place_teacher(setup, teacher)
    log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)

    frozen, used = load_weights(fixed.frozen, setup.fixed_shardings.frozen, pretrained.weights)
    fixed = dataclasses.replace(fixed, frozen=frozen)
    run_dir = storage.path(cfg.run_dir)
    metric = f"eval_{cfg.metric}"
    # Held from the first write into run_dir to the end (see pretrain.run).
    with exclusive(run_dir):
        # Gradual pruning trains a fixed number of steps; only fully pruned steps can be best.
        best_from = round(cfg.prune.end * steps) if cfg.prune.sparsity else 0
        checkpoints = Checkpointer(run_dir, train_cfg, best_metric=metric, finetuning=True,
                                   best_from=best_from)
        loader, mean_length = batching.train_loader(data.arrays["train"], B,
                                                    cfg.finetune.epochs, cfg.train.seed)
        batches = iter(loader)
        # A LoRA run's checkpoints hold no encoder: it resumes only on the same frozen weights.
        base = {"base.fingerprint": pretrained.fingerprint} if lora else {}
        if teacher is not None:  # nor the teacher's
            base["teacher.fingerprint"] = teacher.fingerprint
        state = checkpoints.restore(setup.abstract, batches, model_cfg, data_order(cfg), base)
        if state is None:
            state = setup.init()
            params, used_trained = load_weights(state.params, setup.shardings.params,
                                                pretrained.weights)
            state = dataclasses.replace(state, params=params)
            used |= used_trained
            # The tagger and QA heads read every position: the pooler has no place there.
            missing = sorted(name for name in set(pretrained.weights) - used
                             if "pooler" not in name or task.objectives == ("cls",))
            if missing:
                raise ValueError(f"{cfg.init_from}: weights with no place in the "
                                 f"{cfg.finetune.task} model: {', '.join(missing[:5])}")
        start = int(jax.device_get(state.step))
        if jax.process_index() == 0:
            storage.write_whole(run_dir / "tokenizer.json", tokenizer.to_str(pretty=True))
        saved_config = {**to_dict(cfg), "train": dataclasses.asdict(train_cfg),
                        "model": dataclasses.asdict(model_cfg), "labels": list(data.labels),
                        "base": pretrained.record(),
                        **({"teacher": teacher.record()} if teacher is not None else {})}
        # Batches are padded to their longest sentence: count the positions actually computed.
        shapes = {"input_ids": (B, mean_length)}
        logger = metrics.MetricsLogger(
            run_dir, start, steps, tokens_per_step=task.tokens(shapes),
            flops_per_step=task.flops(model_cfg, shapes), peak=metrics.peak_flops(),
            keys=tasks.train_metric_keys(task), tensorboard=cfg.train.tensorboard,
            progress_bar=cfg.train.progress_bar)
        predict = make_eval_step(setup, mesh, outputs=True)

        def scores(params, split: str) -> dict:
            return split_scores(predict, params, fixed, data, split, B, task, mesh,
                                cfg.finetune.task != "sequence_classification")

        epoch_ends = []  # when each epoch's validation ended, for the seconds per epoch

        def validate(params):
            line = {k: v for k, v in scores(params, "validation").items()
                    if isinstance(v, float)}
            epoch_ends.append(time.perf_counter())
            return line

        if cfg.prune.structured and start == 0:
            pruned_scores = {name: scores(state.params, name) for name in ("validation", "test")
                             if len(data.arrays[name]["example_weights"])}
        train_step = make_train_step(setup, tx, optim.learning_rate_schedule(train_cfg), mesh,
                                     train_cfg.grad_accum_steps)
        loop_started = time.perf_counter()
        train_loop(train_cfg, state, fixed, train_step, batches, mesh, checkpoints=checkpoints,
                   logger=logger, config=saved_config, evaluate=validate,
                   stop_early=(lambda line: False) if cfg.prune.sparsity else EarlyStopping(
                       metric, cfg.finetune.patience, metrics.eval_history(run_dir, start)))
        loop_s = time.perf_counter() - loop_started

        best = Checkpointer(run_dir, train_cfg, best_metric=metric, finetuning=True)
        best_step = best.best_step()
        params = restore_params(best.manager, best_step, setup.abstract)
        best.close()
        results = {"task": cfg.finetune.task, "best_step": best_step,
                   "labels": list(data.labels), "sizes": data.sizes, "notes": data.notes,
                   "trainable_params": trainable, "total_params": total,
                   "epoch_s": loop_s * steps_per_epoch / max(steps - start, 1),
                   "epochs_s": np.diff([loop_started, *epoch_ends]).tolist()}
        for name in ("validation", "test"):
            if len(data.arrays[name]["example_weights"]):
                results[name] = {k.removeprefix("eval_"): v
                                 for k, v in scores(params, name).items()}
        if cfg.prune.structured:
            results["layer_heads"] = list(model_cfg.layer_heads)
            results["layer_intermediate"] = list(model_cfg.layer_intermediate)
            if start == 0:  # the pruned model's scores before it was trained
                results["pruned"] = {name: {k.removeprefix("eval_"): v for k, v in line.items()}
                                     for name, line in pruned_scores.items()}
        if cfg.prune.sparsity:
            results["sparsity"] = prune.sparsity_report(jax.device_get(params))
        if jax.process_index() == 0:
            results["plot"] = str(plot_run(run_dir))
        results["wall_s"] = time.perf_counter() - started
        if jax.process_index() == 0:
            storage.write_whole(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
        return results


@dataclasses.dataclass(frozen=True)
class Command:
    """One of the commands that run `run`: what it is for, and what it needs set."""

    prog: str
    description: str
    example: str
    config: Path  # its default config file
    required: typing.Callable[[FinetuneConfig], str]  # cfg -> what is missing, "" if none


COMMANDS = {
    "finetune": Command(
        "python -m jaxlm.finetune",
        "Fine-tune a pretrained BERT (jaxlm run or Hugging Face directory) for sequence "
        "classification, token classification or question answering.",
        "python -m jaxlm.finetune init_from=runs/bert_tiny finetune.epochs=3",
        DEFAULT_CONFIG, lambda cfg: ""),
    "distill": Command(
        "python -m jaxlm.distill",
        "Distill a fine-tuned BERT (jaxlm run or Hugging Face directory) into a smaller "
        "student trained on the teacher's soft targets and the labels.",
        "python -m jaxlm.distill distill.teacher=runs/classify distill.student_layers=1",
        DEFAULT_CONFIG.with_name("distill_classify.yaml"),
        lambda cfg: "" if cfg.distill.teacher else (
            "distill.teacher is not set: give a fine-tuned jaxlm run or Hugging Face "
            "directory to distill")),
    "prune": Command(
        "python -m jaxlm.prune",
        "Prune a BERT while fine-tuning it: attention heads and MLP neurons by importance, "
        "or single weights by magnitude on a gradual schedule.",
        "python -m jaxlm.prune init_from=runs/classify prune.heads=0.5",
        DEFAULT_CONFIG.with_name("prune_classify.yaml"),
        lambda cfg: "" if cfg.prune.structured or cfg.prune.sparsity else (
            "nothing to prune: set prune.heads, prune.neurons or prune.sparsity")),
}


def main(argv: list[str] | None = None, *, command: str = "finetune") -> int:
    """The command `command` (a key of COMMANDS)."""
    host.keep_freed_memory()  # before JAX starts its CPU client
    host.cache_compilations()
    spec = COMMANDS[command]
    parser = argparse.ArgumentParser(prog=spec.prog, description=spec.description,
                                     epilog=f"Example: {spec.example}")
    parser.add_argument("--config", default=str(spec.config),
                        help=f"YAML config (default: configs/{spec.config.name})")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="e.g. init_from=runs/bert_tiny finetune.lora_rank=8")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    metrics.setup_logging()
    try:
        cfg = load(args.config, args.overrides, cls=FinetuneConfig)
        if spec.required(cfg):
            raise ConfigError(spec.required(cfg))
        results = run(cfg)
    except (ConfigError, DataError, NonFiniteError, OSError, ValueError, RunDirInUse,
            metrics.MetricsFileError) as e:  # OSError: a full disk, a read-only run_dir, ...
        log.error("%s", e)
        return 1
    if jax.process_index() == 0:
        print_results(results)
    return 0


def print_results(results: dict) -> None:
    def shown(scores: dict) -> dict:
        return {k: round(v, 4) for k, v in scores.items() if isinstance(v, float)}

    for name, scores in results.get("pruned", {}).items():
        print(f"{name}, pruned before training: {shown(scores)}")
    for name in ("validation", "test"):
        if name in results:
            print(f"{name}: {shown(results[name])}")
    if "layer_heads" in results:
        print(f"heads per layer {results['layer_heads']}, MLP width per layer "
              f"{results['layer_intermediate']}")
    if "sparsity" in results:
        print(f"encoder weight sparsity {results['sparsity']['encoder']:.3f}")
    print(f"best step {results['best_step']}; trainable parameters "
          f"{results['trainable_params']:,} of {results['total_params']:,}; "
          f"{results['epoch_s']:.0f} s per epoch; wall {results['wall_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
