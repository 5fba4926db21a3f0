"""Loading trained models for use: the newest checkpoint of a jaxlm run (pretraining or
fine-tuning) or a Hugging Face directory, with its tokenizer.

The saved config says what to build, so a run directory alone is enough.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from flax import nnx

from jaxlm.config import Config, FinetuneConfig, MeshConfig, ModelConfig, from_dict
from jaxlm.data import load_tokenizer
from jaxlm.hf.bert import from_pretrained
from jaxlm.objectives.registry import classify_task
from jaxlm.training import optim, sharding
from jaxlm.training.checkpoint import open_latest, restore_params
from jaxlm.training.state import LORA_TRAINABLE, load_weights, merge, setup_state

log = logging.getLogger(__name__)


def load_for_inference(path: str | Path, mesh=None):
    """The trained module (eval mode) and config of the newest checkpoint under `path`.

    Args:
      path: a run directory (holding `checkpoints/`) or its `checkpoints/` directory.
      mesh: where to place the parameters; default all local devices, data parallel.

    Returns:
      (module, cfg): a `BertForPreTraining`, `GPTLanguageModel` or
      `EncoderDecoderTransformer` with the trained parameters, and the run's `Config`.

    Raises:
      FileNotFoundError: no checkpoint under `path`.
      ValueError: a fine-tuning run (load it with `load_classifier`).
    """
    manager, step, saved = open_latest(path)
    if "labels" in saved:
        manager.close()
        raise ValueError(f"{path} is a fine-tuned classifier; use python -m jaxlm.classify")
    cfg = from_dict(Config, saved)
    mesh = mesh if mesh is not None else sharding.make_mesh(MeshConfig(data=-1))
    setup = setup_state(cfg.model, cfg.train.seed, optim.make_optimizer(cfg.train), mesh)
    params = restore_params(manager, step, setup.abstract)
    manager.close()
    module = merge(setup.model, params, setup.fixed)
    module.eval()
    return module, cfg


def load_run(path: str | Path, kinds: tuple[str, ...], purpose: str):
    """`load_for_inference` for a use that needs one of `kinds`, plus the run's tokenizer.

    Returns:
      (module, cfg, tokenizer_path), the tokenizer being the `tokenizer.json` that
      train.py writes into the run directory.

    Raises:
      FileNotFoundError: no checkpoint, or no tokenizer.json in the run directory.
      ValueError: the run holds another kind of model.
    """
    module, cfg = load_for_inference(path)
    if cfg.model.kind not in kinds:
        raise ValueError(f"{path} holds a {cfg.model.kind!r} model; {purpose} needs "
                         f"model.kind {' or '.join(kinds)}")
    return module, cfg, run_tokenizer(path, "train.py")


def run_tokenizer(path: str | Path, writer: str) -> Path:
    """The `tokenizer.json` of the run at `path` (a run directory or its checkpoints/).

    Raises:
      FileNotFoundError: naming the file and `writer`, the command that writes it.
    """
    run_dir = Path(path).absolute()
    if run_dir.name == "checkpoints" and not (run_dir / "checkpoints").is_dir():
        run_dir = run_dir.parent
    tokenizer_path = run_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise FileNotFoundError(f"{tokenizer_path} not found ({writer} writes it)")
    return tokenizer_path


@dataclasses.dataclass(frozen=True)
class Pretrained:
    config: ModelConfig
    weights: dict[str, np.ndarray]  # "bert.layers.0.attention.query.kernel" -> array
    tokenizer_path: Path


def load_pretrained(path: str | Path) -> Pretrained:
    """The encoder weights, model config and tokenizer of a jaxlm BERT run or a Hugging
    Face BERT directory (config.json + weights + tokenizer.json or vocab.txt).

    Raises:
      FileNotFoundError: no checkpoint, or no tokenizer next to it.
      ValueError: a run that is not a BERT.
    """
    directory = Path(path).expanduser()
    if not str(path):
        raise FileNotFoundError("init_from is not set: give a jaxlm BERT run directory or a "
                                "Hugging Face BERT directory")
    if (directory / "config.json").is_file():
        module, config = from_pretrained(directory, encoder_only=True)
        tokenizer_path = next((directory / n for n in ("tokenizer.json", "vocab.txt")
                               if (directory / n).is_file()), None)
        if tokenizer_path is None:
            raise FileNotFoundError(f"{directory}: no tokenizer.json or vocab.txt next to the "
                                    f"model")
    else:
        module, cfg, tokenizer_path = load_run(directory, ("bert",), "fine-tuning")
        config = cfg.model
    weights = {"bert." + ".".join(map(str, k)): np.asarray(v.get_value())
               for k, v in nnx.to_flat_state(nnx.state(module.bert, nnx.Param))}
    return Pretrained(config, weights, Path(tokenizer_path))


def load_classifier(path: str | Path, mesh=None):
    """A fine-tuned classifier (eval mode) from its run directory.

    Returns:
      (module, labels, tokenizer_path, max_seq_length).

    Raises:
      FileNotFoundError: no checkpoint or no tokenizer.json in the run directory.
      ValueError: a run that is not a fine-tuned classifier.
    """
    manager, step, saved = open_latest(path)
    if "labels" not in saved:
        manager.close()
        raise ValueError(f"{path} is not a fine-tuned classifier (no labels saved); "
                         f"train one with python -m jaxlm.finetune")
    labels = tuple(saved.pop("labels"))
    model_cfg = from_dict(ModelConfig, saved.pop("model"))
    cfg = from_dict(FinetuneConfig, saved)
    mesh = mesh if mesh is not None else sharding.make_mesh(
        dataclasses.replace(cfg.mesh, data=-1, fsdp=1, tensor=1))
    task = classify_task(len(labels), cfg.finetune.classifier_dropout)
    setup = setup_state(model_cfg, cfg.train.seed, optim.make_optimizer(cfg.train), mesh,
                        task, LORA_TRAINABLE if model_cfg.lora_rank else nnx.Param)
    params = restore_params(manager, step, setup.abstract)
    manager.close()
    fixed = setup.fixed
    if model_cfg.lora_rank:  # the frozen encoder is not in the checkpoint: reload it
        frozen, _ = load_weights(fixed.frozen, setup.fixed_shardings.frozen,
                                 load_pretrained(cfg.init_from).weights)
        fixed = dataclasses.replace(fixed, frozen=frozen)
    module = merge(setup.model, params, fixed)
    module.eval()
    return module, labels, run_tokenizer(path, "jaxlm.finetune"), cfg.data.max_seq_length


def load_masked_lm(path: str | Path):
    """(model, tokenizer) from a jaxlm run directory or a Hugging Face BERT directory."""
    directory = Path(path)
    if (directory / "config.json").is_file():  # Hugging Face
        model, _ = from_pretrained(directory)
        model.eval()
        for name in ("tokenizer.json", "vocab.txt"):
            if (directory / name).is_file():
                return model, load_tokenizer(directory / name)
        raise FileNotFoundError(f"{directory}: no tokenizer.json or vocab.txt next to the model")
    model, _, tokenizer_path = load_run(directory, ("bert",), "fill-mask")
    return model, load_tokenizer(tokenizer_path)
