"""Loading trained models for use: the newest checkpoint of a jaxlm run (pretraining or
fine-tuning) or a Hugging Face directory, with its tokenizer.

The saved config says what to build, so a run directory alone is enough.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path

import numpy as np
from flax import nnx

from jaxlm import storage
from jaxlm.compression import quantize
from jaxlm.compression.distill import MASKED_LM, Teacher
from jaxlm.config import Config, FinetuneConfig, MeshConfig, ModelConfig, from_dict
from jaxlm.data import load_tokenizer
from jaxlm.hf.bert import HEADS, from_pretrained, from_pretrained_head
from jaxlm.models.bert import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from jaxlm.objectives.registry import finetuning_task, pretraining_task
from jaxlm.training import optim, sharding
from jaxlm.training.checkpoint import open_latest, restore_newest
from jaxlm.training.integrity import weights_fingerprint
from jaxlm.training.state import LORA_TRAINABLE, load_weights, merge, setup_state

log = logging.getLogger(__name__)


def load_for_inference(path: str | Path, mesh=None, step: int | None = None):
    """The trained module (eval mode) and config of the newest readable checkpoint under
    `path` (an unreadable or corrupt one is skipped with a warning, as training does).

    Args:
      path: a run directory (holding `checkpoints/`) or its `checkpoints/` directory.
      mesh: where to place the parameters; default all local devices, data parallel.
      step: the checkpoint to load instead of the newest.

    Returns:
      (module, cfg, step): a `BertForPreTraining`, `GPTLanguageModel` or
      `EncoderDecoderTransformer` with the trained parameters, the run's `Config`, and the
      step loaded.

    Raises:
      FileNotFoundError: no readable checkpoint under `path` (or not `step`).
      ValueError: a fine-tuning run (load it with `load_finetuned`).
    """
    mesh = mesh if mesh is not None else sharding.make_mesh(MeshConfig(data=-1))

    def build(saved: dict):
        if "labels" in saved:
            raise ValueError(f"{path} is a fine-tuned model; load it with load_finetuned (or "
                             f"python -m jaxlm.classify, jaxlm.tag, jaxlm.answer)")
        cfg = from_dict(Config, _without_teacher(saved))
        return setup_state(cfg.model, cfg.train.seed, optim.make_optimizer(cfg.train), mesh)

    params, setup, step, saved = restore_newest(path, build, step)
    module = merge(setup.model, params, setup.fixed)
    module.eval()
    return module, from_dict(Config, _without_teacher(saved)), step


def _without_teacher(saved: dict) -> dict:
    """A saved config without the record of a distilled run's teacher, checked on resume only."""
    return {k: v for k, v in saved.items() if k != "teacher"}


def load_run(path: str | Path, kinds: tuple[str, ...], purpose: str, step: int | None = None):
    """`load_for_inference` for a use that needs one of `kinds`, plus the run's tokenizer;
    `path` may also be a pretraining run quantized by `python -m jaxlm.quantize`.

    Returns:
      (module, cfg, tokenizer_path), the tokenizer being the `tokenizer.json` that
      train.py writes into the run directory.

    Raises:
      FileNotFoundError: no checkpoint, or no tokenizer.json in the run directory.
      ValueError: the run holds another kind of model.
    """
    if quantize.is_quantized(path):
        module, cfg, _ = load_quantized(path, finetuned=False)
        tokenizer_path = run_tokenizer(path, "jaxlm.quantize")
    else:
        module, cfg, _ = load_for_inference(path, step=step)
        tokenizer_path = run_tokenizer(path, "train.py")
    if cfg.model.kind not in kinds:
        raise ValueError(f"{path} holds a {cfg.model.kind!r} model; {purpose} needs "
                         f"model.kind {' or '.join(kinds)}")
    return module, cfg, tokenizer_path


def run_tokenizer(path: str | Path, writer: str) -> Path:
    """The `tokenizer.json` of the run at `path` (a run directory or its checkpoints/), a
    local copy when the run is in a bucket.

    Raises:
      FileNotFoundError: naming the file and `writer`, the command that writes it.
    """
    run_dir = located(path)
    if run_dir.name == "checkpoints" and not (run_dir / "checkpoints").is_dir():
        run_dir = run_dir.parent
    tokenizer_path = run_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"{tokenizer_path} not found ({writer} writes it)")
    return storage.local_copy(tokenizer_path)


def located(path: str | Path):
    """A local path made absolute; in a bucket, a Hugging Face directory as a local copy
    (its readers need files) and a run directory where it is (Orbax reads buckets)."""
    if not storage.is_url(path):
        return Path(path).expanduser().absolute()
    remote = storage.path(path)
    return storage.local_copy(remote) if (remote / "config.json").is_file() else remote


def hf_tokenizer(directory: Path) -> Path:
    """The tokenizer next to a Hugging Face model: tokenizer.json, else vocab.txt.

    Raises:
      FileNotFoundError: neither is there.
    """
    for name in ("tokenizer.json", "vocab.txt"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory}: no tokenizer.json or vocab.txt next to the model")


@dataclasses.dataclass(frozen=True)
class Pretrained:
    config: ModelConfig
    weights: dict[str, np.ndarray]  # "bert.layers.0.attention.query.kernel" -> array
    tokenizer_path: Path
    source: Path  # the run or Hugging Face directory, absolute
    step: int | None  # the run's checkpoint; None for a Hugging Face directory
    task: str | None = None  # a fine-tuned model's finetune.task; None for a pretrained one
    labels: tuple[str, ...] = ()  # a fine-tuned model's classes or tags, in output order

    @functools.cached_property
    def fingerprint(self) -> str:
        """Which base a LoRA run was trained on."""
        return weights_fingerprint(self.weights)

    def record(self) -> dict:
        """What a fine-tuned run saves of its base, to find and check it again."""
        return {"path": str(self.source), "step": self.step, "fingerprint": self.fingerprint}


def is_finetuned(directory: Path) -> bool:
    """Whether `directory` holds a fine-tuned model: a jaxlm fine-tuning run, or a Hugging
    Face directory of one of the fine-tuning heads."""
    if (directory / "config.json").is_file():
        architectures = json.loads((directory / "config.json").read_text()).get("architectures")
        return bool(architectures) and architectures[0] in {
            HEADS[head][0] for head in HEAD_TASKS}
    try:
        manager, _, saved = open_latest(directory)
    except FileNotFoundError:
        raise
    except Exception:  # noqa: BLE001 - an unreadable newest checkpoint: load_for_inference
        return False  # goes back to an older one, or says why none reads
    manager.close()
    return "labels" in saved


def load_pretrained(path: str | Path, step: int | None = None) -> Pretrained:
    """The encoder weights, model config and tokenizer of a jaxlm BERT run (its newest
    checkpoint, or `step`) or a Hugging Face BERT directory (config.json + weights +
    tokenizer.json or vocab.txt); for a model already fine-tuned (a run, or a Hugging Face
    head), all its weights, head included, at its best checkpoint, with its task and labels.

    Raises:
      FileNotFoundError: no checkpoint, or no tokenizer next to it.
      ValueError: a run that is not a BERT.
    """
    if not str(path):
        raise FileNotFoundError("init_from is not set: give a jaxlm BERT run directory or a "
                                "Hugging Face BERT directory")
    directory = located(path)
    if is_finetuned(directory):
        teacher = load_teacher(directory)
        return Pretrained(teacher.config, teacher.weights, teacher.tokenizer_path, directory,
                          None, teacher.task, teacher.labels)
    if (directory / "config.json").is_file():
        module, config = from_pretrained(directory, encoder_only=True)
        tokenizer_path = hf_tokenizer(directory)
    else:
        module, cfg, step = load_for_inference(directory, step=step)
        if cfg.model.kind != "bert":
            raise ValueError(f"{directory} holds a {cfg.model.kind!r} model; fine-tuning needs "
                             f"model.kind bert")
        config, tokenizer_path = cfg.model, run_tokenizer(directory, "train.py")
    weights = {"bert." + ".".join(map(str, k)): np.asarray(v.get_value())
               for k, v in nnx.to_flat_state(nnx.state(module.bert, nnx.Param))}
    return Pretrained(config, weights, Path(tokenizer_path), directory, step)


def load_base(base: dict | None, init_from: str, run_dir: str | Path) -> Pretrained:
    """The exact base the fine-tuned run `run_dir` was trained on (`base`, its saved
    `Pretrained.record()`; a run from before bases were recorded falls back to `init_from`).

    Raises:
      ValueError: the base's weights have changed since; naming both directories.
      FileNotFoundError: the base, or its step, is gone.
    """
    if base is None:
        return load_pretrained(init_from)
    pretrained = load_pretrained(base["path"], base["step"])
    if pretrained.fingerprint != base["fingerprint"]:
        raise ValueError(f"{base['path']}: its weights are not the ones {run_dir} was "
                         f"fine-tuned on (fingerprint {pretrained.fingerprint}, recorded "
                         f"{base['fingerprint']}); restore that base or fine-tune again")
    return pretrained


def load_finetuned(path: str | Path, mesh=None, task: str | None = None):
    """A fine-tuned model (eval mode) from its run directory: a classifier, a tagger or a
    question answerer, as the run's `finetune.task` says, at its best checkpoint by
    validation (the one its results.json scores); or such a model quantized by
    `python -m jaxlm.quantize`.

    Args:
      task: the task the caller serves; another run's is an error naming both.

    Returns:
      (module, labels, tokenizer_path, the run's FinetuneConfig).

    Raises:
      FileNotFoundError: no readable checkpoint or no tokenizer.json in the run directory.
      ValueError: a run that is not fine-tuned, or not for `task`.
    """

    if quantize.is_quantized(path):
        module, cfg, labels = load_quantized(path, finetuned=True)
        if task is not None and cfg.finetune.task != task:
            raise ValueError(f"{path} was fine-tuned for {cfg.finetune.task}, not {task}")
        return module, labels, run_tokenizer(path, "jaxlm.quantize"), cfg

    def parts(saved: dict):
        if "labels" not in saved:
            raise ValueError(f"{path} is not a fine-tuned model (no labels saved); train one "
                             f"with python -m jaxlm.finetune")
        saved = dict(saved)
        labels = tuple(saved.pop("labels"))
        model_cfg = from_dict(ModelConfig, saved.pop("model"))
        base = saved.pop("base", None)
        saved.pop("teacher", None)  # a distilled run's teacher, checked on resume only
        cfg = from_dict(FinetuneConfig, saved)
        if task is not None and cfg.finetune.task != task:
            raise ValueError(f"{path} was fine-tuned for {cfg.finetune.task}, not {task}")
        return labels, model_cfg, base, cfg

    def build(saved: dict):
        labels, model_cfg, _, cfg = parts(saved)
        devices = mesh if mesh is not None else sharding.make_mesh(
            dataclasses.replace(cfg.mesh, data=-1, fsdp=1, tensor=1))
        head = finetuning_task(cfg.finetune.task, len(labels), cfg.finetune.classifier_dropout)
        return setup_state(model_cfg, cfg.train.seed, optim.make_optimizer(cfg.train), devices,
                           head, LORA_TRAINABLE if model_cfg.lora_rank else nnx.Param)

    params, setup, _, saved = restore_newest(path, build, best=True)
    labels, model_cfg, base, cfg = parts(saved)
    fixed = setup.fixed
    if model_cfg.lora_rank:  # the frozen encoder is not in the checkpoint: reload it
        pretrained = load_base(base, cfg.init_from, path)
        frozen, _ = load_weights(fixed.frozen, setup.fixed_shardings.frozen, pretrained.weights)
        fixed = dataclasses.replace(fixed, frozen=frozen)
    module = merge(setup.model, params, fixed)
    module.eval()
    return module, labels, run_tokenizer(path, "jaxlm.finetune"), cfg


def load_masked_lm(path: str | Path):
    """(model, tokenizer) from a jaxlm run directory or a Hugging Face BERT directory."""
    directory = located(path)
    if (directory / "config.json").is_file():  # Hugging Face
        model, _ = from_pretrained(directory)
        model.eval()
        return model, load_tokenizer(hf_tokenizer(directory))
    model, _, tokenizer_path = load_run(directory, ("bert",), "fill-mask")
    return model, load_tokenizer(tokenizer_path)


# The fine-tuning task of each Hugging Face head.
HEAD_TASKS = {BertForSequenceClassification: "sequence_classification",
              BertForTokenClassification: "token_classification",
              BertForQuestionAnswering: "question_answering"}


def load_teacher(path: str | Path, masked_lm: bool = False) -> Teacher:
    """A model to distill: a jaxlm fine-tuning run (its best checkpoint, LoRA merged in) or a
    Hugging Face directory of one of the three heads; with `masked_lm`, a pretrained BERT (a
    jaxlm run or a Hugging Face BertForPreTraining directory) whose masked-LM head teaches.

    Raises:
      FileNotFoundError: no checkpoint, model or tokenizer at `path`.
      ValueError: a model that is not fine-tuned (with `masked_lm`: not a pretrained BERT).
    """
    directory = located(path)
    hf = (directory / "config.json").is_file()
    if masked_lm:
        if hf:
            module, _ = from_pretrained(directory)
            tokenizer_path = hf_tokenizer(directory)
        else:
            module, _, tokenizer_path = load_run(directory, ("bert",), "masked-LM distillation")
        return Teacher.from_module(module, MASKED_LM, (), tokenizer_path, directory)
    if hf:
        module, labels = from_pretrained_head(directory)
        task, tokenizer_path = HEAD_TASKS[type(module)], hf_tokenizer(directory)
    else:
        module, labels, tokenizer_path, cfg = load_finetuned(directory)
        task = cfg.finetune.task
    return Teacher.from_module(module, task, labels, tokenizer_path, directory)


def load_quantized(path: str | Path, finetuned: bool):
    """A model written by `python -m jaxlm.quantize` (eval mode): the run's architecture
    rebuilt, made int8 (`compression.quantize`) and filled with the saved arrays.

    Returns:
      (module, the run's FinetuneConfig or Config, labels (() for a pretraining run)).

    Raises:
      FileNotFoundError, ValueError: missing or unreadable files, or a fine-tuned model where
        a pretrained one is needed (and the other way round).
    """
    description, values = quantize.read(path)
    saved = dict(description["run"])
    labels = tuple(saved.pop("labels", ()))
    if "finetune" in saved and not finetuned:
        raise ValueError(f"{path} holds a fine-tuned model; use python -m jaxlm.classify, "
                         f"jaxlm.tag or jaxlm.answer")
    if "finetune" not in saved and finetuned:
        raise ValueError(f"{path} holds a pretrained model; use python -m jaxlm.fill_mask "
                         f"or jaxlm.generate")
    model_cfg = from_dict(ModelConfig, saved["model"])
    if finetuned:
        cfg = from_dict(FinetuneConfig, {k: v for k, v in saved.items()
                                         if k not in ("model", "base", "teacher")})
        task = finetuning_task(cfg.finetune.task, len(labels), 0.0)
    else:
        cfg = from_dict(Config, saved)
        task = pretraining_task(model_cfg.kind)
    module = quantize.quantize(task.build(model_cfg, nnx.Rngs(0)),
                               activations=description["mode"] == "w8a8")
    quantize.load_arrays(module, values, str(path))
    module.eval()
    return module, cfg, labels
