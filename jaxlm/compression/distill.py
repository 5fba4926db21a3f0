"""Knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural
Network"), in fine-tuning and in BERT pretraining, with the student initialised from the
teacher's layers as in DistilBERT (Sanh et al. 2019, 3).

A teacher's output distributions, softened by a temperature T, become soft targets for a
smaller student trained on the same data:

    loss = (1 - alpha) CE(student, labels)
           + alpha T^2 KL(softmax(teacher / T) || softmax(student / T))

Fine-tuning distills the head's outputs (class, tags, answer span) of a fine-tuned teacher;
pretraining distills a pretrained BERT's masked-LM distributions at the masked positions
(DistilBERT's soft-target loss beside the hard MLM loss; next-sentence prediction keeps its
labels). The teacher rides inside the student's module as a frozen submodule `teacher`: its
logits are computed in the same jitted step, sharded by the same logical axes, and never get
a gradient, while the student's own parameters keep the names of a plain model, so a
distilled run loads, serves and exports as any other.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from jaxlm.config import ConfigError, ModelConfig
from jaxlm.data import load_tokenizer
from jaxlm.hf.bert import merged_params
from jaxlm.objectives import losses
from jaxlm.objectives.registry import finetuning_task, pretraining_task
from jaxlm.objectives.tasks import HEAD_LOSSES, Task, bert_inputs, encoder_inputs
from jaxlm.training.integrity import weights_fingerprint

MASKED_LM = "masked_lm"  # the task of a pretrained BERT teacher (its masked-LM head)


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A model to distill, as arrays: what the step rebuilds inside the student."""

    config: ModelConfig  # without LoRA: adapters are merged into `weights`
    task: str  # finetune.task it was trained for, or MASKED_LM for a pretrained BERT
    labels: tuple[str, ...]  # its classes or tags in output order; () for question answering
    weights: dict[str, np.ndarray]  # by parameter path ("bert.layers.0...", "classifier.kernel")
    tokenizer_path: Path
    source: Path  # the run or Hugging Face directory

    @classmethod
    def from_module(cls, module: nnx.Module, task: str, labels, tokenizer_path: Path,
                    source: Path) -> Teacher:
        return cls(dataclasses.replace(module.config, lora_rank=0), task, tuple(labels or ()),
                   merged_params(module), Path(tokenizer_path), Path(source))

    @functools.cached_property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.weights)

    def record(self) -> dict:
        """What a distilled run saves of its teacher, to check it on a resume."""
        return {"path": str(self.source), "fingerprint": self.fingerprint}

    def frozen_weights(self) -> dict[str, np.ndarray]:
        """The weights by their path in the student's module (under `teacher.`)."""
        return {f"teacher.{name}": value for name, value in self.weights.items()}


def check_compatible(teacher: Teacher, task: str, labels: tuple[str, ...],
                     tokenizer: Tokenizer) -> None:
    """Raises ConfigError unless the teacher answers the student's task with the same labels
    in the same order, from the same token ids."""
    where = f"distill.teacher={teacher.source}"
    if teacher.task != task:
        raise ConfigError(f"{where} was fine-tuned for {teacher.task}, not finetune.task={task}")
    if teacher.labels and teacher.labels != tuple(labels):
        raise ConfigError(f"{where}: its labels {list(teacher.labels)[:8]} are not the training "
                          f"data's {list(labels)[:8]} (same names, same order)")
    if load_tokenizer(teacher.tokenizer_path).get_vocab() != tokenizer.get_vocab():
        raise ConfigError(f"{where}: its tokenizer ({teacher.tokenizer_path}) differs from the "
                          f"student's; both read the same token ids")


def teacher_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layer that initialises each student layer: evenly spaced from the first,
    every k-th for k = L_teacher / L_student (DistilBERT takes one layer in two)."""
    if not 0 < student_layers <= teacher_layers:
        raise ValueError(f"distill.student_layers={student_layers}: must be between 1 and the "
                         f"teacher's {teacher_layers} layers")
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def student_from_teacher(teacher: Teacher, num_layers: int
                         ) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """A student with `num_layers` of the teacher's layers (`teacher_layers`), its
    embeddings, pooler and head: (config, weights by parameter path)."""
    picks = teacher_layers(teacher.config.num_layers, num_layers)
    weights = {}
    for name, value in teacher.weights.items():
        parts = name.split(".")
        if parts[:2] != ["bert", "layers"]:
            weights[name] = value
        elif int(parts[2]) in picks:
            parts[2] = str(picks.index(int(parts[2])))
            weights[".".join(parts)] = value
    config = teacher.config
    return dataclasses.replace(
        config, num_layers=num_layers,
        layer_heads=tuple(config.layer_heads[i] for i in picks) if config.layer_heads else (),
        layer_intermediate=(tuple(config.layer_intermediate[i] for i in picks)
                            if config.layer_intermediate else ())), weights


def student_only(trainable):
    """The nnx filter `trainable` without the teacher's parameters."""
    return nnx.All(trainable, nnx.Not(nnx.PathContains("teacher")))


def _soft_targets(objective: str, outputs, batch: dict) -> list[tuple[jax.Array, jax.Array]]:
    """The head's distributions that distillation matches, each as (logits_BXK, weights_BX):
    the word at each masked position (DistilBERT's soft-target MLM loss); the class; the tag
    at each word's first sub-word; the answer's start and its end."""
    if objective == "mlm":
        return [(outputs[0], batch["masked_weights"])]
    if objective == "cls":
        return [(outputs[:, None], batch["example_weights"][:, None])]
    if objective == "tag":
        return [(outputs, batch["tag_weights"])]
    w_B1 = batch["example_weights"][:, None]
    return [(outputs[0][:, None], w_B1), (outputs[1][:, None], w_B1)]


def distillation_sums(objective: str, student_outputs, teacher_outputs, batch: dict,
                      temperature: float) -> dict:
    """T^2 KL of the student's soft distributions from the teacher's, and the predictions
    where the student's top class is the teacher's, summed with the head's weights (QA
    averages its start and end terms)."""
    pairs = list(zip(_soft_targets(objective, student_outputs, batch),
                     _soft_targets(objective, teacher_outputs, batch), strict=True))
    loss, agree = 0.0, 0.0
    for (student_BXK, w_BX), (teacher_BXK, _) in pairs:
        w_BX = w_BX.astype(jnp.float32)
        loss += jnp.sum(losses.distillation_kl(student_BXK, teacher_BXK, temperature) * w_BX)
        agree += jnp.sum(losses.top1_correct(student_BXK, jnp.argmax(teacher_BXK, -1)) * w_BX)
    return {"kd_loss": loss / len(pairs), "kd_correct": agree / len(pairs)}


def distillation_task(head: Task, teacher: Teacher, alpha: float, temperature: float) -> Task:
    """`head`'s task trained on its labels and the teacher's soft targets: objectives
    (head's..., "kd"), the first weighted 1 - alpha, "kd" alpha, the others (BERT's next
    sentence) 1; "kd_accuracy" is the agreement with the teacher. The teacher runs without
    dropout: its targets are its predictions."""
    objective = head.objectives[0]
    teacher_cfg = dataclasses.replace(teacher.config, hidden_dropout=0.0, attention_dropout=0.0)
    teacher_head = (pretraining_task("bert") if teacher.task == MASKED_LM
                    else finetuning_task(teacher.task, len(teacher.labels), 0.0))
    inputs = bert_inputs if objective == "mlm" else encoder_inputs

    def build(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
        student = head.build(cfg, rngs)
        student.teacher = teacher_head.build(teacher_cfg, rngs)
        return student

    def sums(module: nnx.Module, batch: dict) -> dict:
        student_outputs = module(*inputs(batch))
        teacher_outputs = jax.lax.stop_gradient(module.teacher(*inputs(batch)))
        return {**HEAD_LOSSES[objective](student_outputs, batch),
                **distillation_sums(objective, student_outputs, teacher_outputs, batch,
                                    temperature)}

    def counts(batch: dict) -> dict:
        head_counts = head.counts(batch)
        return {**head_counts, "kd": head_counts[objective]}

    def flops(cfg: ModelConfig, shapes: dict) -> float:
        # The teacher's forward pass is a third of its training FLOPs (no backward).
        return head.flops(cfg, shapes) + teacher_head.flops(teacher_cfg, shapes) / 3

    weights = (1.0 - alpha, *(1.0 for _ in head.objectives[1:]), alpha)
    return dataclasses.replace(head, objectives=(*head.objectives, "kd"), build=build,
                               counts=counts, sums=sums, flops=flops, loss_weights=weights)
