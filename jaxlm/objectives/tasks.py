"""What a model learns: its module, its batch, its losses and its FLOPs (`Task`), and the
loss sums of each kind (`registry` puts them together per model kind).

The training step, the checkpoints and the metrics are shared by every kind; a `Task` holds
what differs. Each task has named objectives ("mlm" and "nsp" for BERT, "lm" for GPT); the loss
is the sum over objectives of the mean loss per prediction, and every objective reports
`<name>_loss` and `<name>_accuracy`. The first objective's loss gives the perplexity.

Sums, not means, come out of `sums`: micro-batches then add up exactly to the big batch,
and `counts` (computed on the whole batch) turns them into means.
"""

from __future__ import annotations

import dataclasses
import typing

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.models.bert import (
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from jaxlm.models.encoder_decoder import EncoderDecoderTransformer
from jaxlm.models.gpt import GPTLanguageModel
from jaxlm.objectives import losses


@dataclasses.dataclass(frozen=True)
class Task:
    objectives: tuple[str, ...]  # loss terms, e.g. ("mlm", "nsp")
    recipe: str  # the data it reads: a `data.preparation.RECIPES` name, or a fine-tuning one
    build: typing.Callable[[ModelConfig, nnx.Rngs], nnx.Module]
    counts: typing.Callable[[dict], dict]  # batch -> {objective: float32 predictions}
    sums: typing.Callable[[nnx.Module, dict], dict]  # -> {<obj>_loss, <obj>_correct}
    flops: typing.Callable[[ModelConfig, dict], float]  # cfg, {key: batch shape} -> FLOPs
    tokens: typing.Callable[[dict], int]  # {key: batch shape} -> tokens read per step
    loss_weights: tuple[float, ...] = ()  # one per objective; () weighs each 1
    unscored: tuple[str, ...] = ()  # objectives with a loss but no accuracy (layer transfer)

    @property
    def scored(self) -> tuple[str, ...]:
        """The objectives that report an accuracy (`<obj>_correct` in the sums)."""
        return tuple(o for o in self.objectives if o not in self.unscored)

    def total_loss(self, mean_losses: dict):
        """The loss trained on: the objectives' mean losses, weighted."""
        weights = self.loss_weights or (1.0,) * len(self.objectives)
        return sum(w * mean_losses[o] for w, o in zip(weights, self.objectives, strict=True))


def _hits(logits_BXV: jax.Array, labels_BX: jax.Array, weights_BX: jax.Array) -> jax.Array:
    return jnp.sum(losses.top1_correct(logits_BXV, labels_BX) * weights_BX)


def encoder_inputs(batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    """What a fine-tuning head reads: (input_ids_BT, token_type_ids_BT, attention_mask_BT)."""
    return batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]


def bert_loss(logits: tuple[jax.Array, jax.Array], batch: dict) -> dict:
    """Masked-LM and next-sentence cross entropy and hits, summed (BERT 3.1)."""
    mlm_logits_BPV, nsp_logits_B2 = logits
    w_BP = batch["masked_weights"].astype(jnp.float32)
    labels_BP, nsp_B1 = batch["masked_ids"], batch["next_sentence_label"][:, None]
    nsp_logits_B12 = nsp_logits_B2[:, None]
    return {
        "mlm_loss": jnp.sum(losses.cross_entropy(mlm_logits_BPV, labels_BP) * w_BP),
        "mlm_correct": _hits(mlm_logits_BPV, labels_BP, w_BP),
        "nsp_loss": jnp.sum(losses.cross_entropy(nsp_logits_B12, nsp_B1)),
        "nsp_correct": _hits(nsp_logits_B12, nsp_B1, 1.0).astype(jnp.float32),
    }


def bert_inputs(batch: dict) -> tuple[jax.Array, ...]:
    """What BertForPreTraining reads: the encoder's inputs and the masked positions."""
    return (*encoder_inputs(batch), batch["masked_positions"])


def bert_sums(module: BertForPreTraining, batch: dict) -> dict:
    return bert_loss(module(*bert_inputs(batch)), batch)


def bert_counts(batch: dict) -> dict:
    return {"mlm": jnp.sum(batch["masked_weights"].astype(jnp.float32)),
            "nsp": jnp.asarray(batch["next_sentence_label"].shape[0], jnp.float32)}


def lm_sums(module: GPTLanguageModel, batch: dict) -> dict:
    """Next-token cross entropy and hits over every position, summed (GPT-2 2)."""
    logits_BTV = module(batch["input_ids"])
    targets_BT = batch["target_ids"]
    return {"lm_loss": jnp.sum(losses.cross_entropy(logits_BTV, targets_BT)),
            "lm_correct": _hits(logits_BTV, targets_BT, 1.0).astype(jnp.float32)}


def lm_counts(batch: dict) -> dict:
    return {"lm": jnp.asarray(batch["target_ids"].size, jnp.float32)}


def target_counts(batch: dict) -> dict:
    return {"lm": jnp.sum(batch["target_weights"].astype(jnp.float32))}


def encoder_decoder_sums(module: EncoderDecoderTransformer, batch: dict) -> dict:
    """Cross entropy and hits of each real target token given the source and the target
    before it (teacher forcing), summed."""
    logits_BTV = module(batch["source_ids"], batch["source_mask"], batch["decoder_input_ids"])
    targets_BT = batch["target_ids"]
    w_BT = batch["target_weights"].astype(jnp.float32)
    return {"lm_loss": jnp.sum(losses.cross_entropy(logits_BTV, targets_BT) * w_BT),
            "lm_correct": _hits(logits_BTV, targets_BT, w_BT)}


def classify_loss(logits_BK: jax.Array, batch: dict) -> dict:
    """Cross entropy and hits of the classifier, summed over real examples (`example_weights`
    0 marks the padding rows of a last, partial batch)."""
    labels_B, w_B = batch["label"], batch["example_weights"].astype(jnp.float32)
    return {"cls_loss": jnp.sum(losses.cross_entropy(logits_BK[:, None], labels_B[:, None])[:, 0]
                                * w_B),
            "cls_correct": _hits(logits_BK, labels_B, w_B)}


def classify_sums(module: BertForSequenceClassification, batch: dict) -> dict:
    return classify_loss(module(*encoder_inputs(batch)), batch)


def tag_loss(logits_BTK: jax.Array, batch: dict) -> dict:
    """Cross entropy and hits of the tag at each word's first sub-word (`tag_weights` 1),
    summed; other sub-words, special tokens and padding weigh 0."""
    tags_BT, w_BT = batch["tag_ids"], batch["tag_weights"].astype(jnp.float32)
    return {"tag_loss": jnp.sum(losses.cross_entropy(logits_BTK, tags_BT) * w_BT),
            "tag_correct": _hits(logits_BTK, tags_BT, w_BT)}


def tag_sums(module: BertForTokenClassification, batch: dict) -> dict:
    return tag_loss(module(*encoder_inputs(batch)), batch)


def tag_counts(batch: dict) -> dict:
    return {"tag": jnp.sum(batch["tag_weights"].astype(jnp.float32))}


def span_loss(logits: tuple[jax.Array, jax.Array], batch: dict) -> dict:
    """Cross entropy of the answer's start and of its end position, averaged, per window
    (BERT 4.2), and the windows whose start and end both score highest, summed."""
    start_BT, end_BT = logits
    w_B = batch["example_weights"].astype(jnp.float32)
    start_B1, end_B1 = batch["start_positions"][:, None], batch["end_positions"][:, None]
    loss_B = 0.5 * (losses.cross_entropy(start_BT[:, None], start_B1)[:, 0]
                    + losses.cross_entropy(end_BT[:, None], end_B1)[:, 0])
    both_B = (losses.top1_correct(start_BT[:, None], start_B1)[:, 0]
              * losses.top1_correct(end_BT[:, None], end_B1)[:, 0])
    return {"span_loss": jnp.sum(loss_B * w_B), "span_correct": jnp.sum(both_B * w_B)}


def span_sums(module: BertForQuestionAnswering, batch: dict) -> dict:
    return span_loss(module(*encoder_inputs(batch)), batch)


# The loss of each model's first objective from its outputs, for tasks that compute the
# outputs themselves (distillation).
HEAD_LOSSES = {"mlm": bert_loss, "cls": classify_loss, "tag": tag_loss, "span": span_loss}


def example_counts(objective: str) -> typing.Callable[[dict], dict]:
    """counts() of a task with one prediction per real example (`example_weights` 1)."""
    return lambda batch: {objective: jnp.sum(batch["example_weights"].astype(jnp.float32))}


def confusion_metrics(confusion_KK) -> dict:
    """Accuracy and macro-F1 from a confusion matrix (rows: true class, columns: predicted).

    Macro-F1 is the unweighted mean over classes of 2 P R / (P + R); a class never predicted
    and never present scores 0.
    """
    confusion_KK = np.asarray(confusion_KK, np.float64)
    hits_K = np.diag(confusion_KK)
    predicted_K, true_K = confusion_KK.sum(0), confusion_KK.sum(1)
    f1_K = np.where(predicted_K + true_K > 0, 2 * hits_K / np.maximum(predicted_K + true_K, 1), 0)
    return {"accuracy": float(hits_K.sum() / max(confusion_KK.sum(), 1)),
            "macro_f1": float(f1_K.mean())}


def train_metric_keys(task: Task) -> tuple[str, ...]:
    """The per-step metrics the train step returns and `metrics.jsonl` averages."""
    per_objective = (*(f"{o}_loss" for o in task.objectives),
                     *(f"{o}_accuracy" for o in task.scored))
    return ("loss", *per_objective, "learning_rate", "grad_norm")


def eval_metrics(task: Task, sums: dict) -> dict:
    """Held-out loss, per-objective loss and accuracy, and the first objective's perplexity,
    from sums (`<obj>_loss`, `<obj>_correct`, `<obj>_count`) added over the eval batches."""
    means = {o: float(sums[f"{o}_loss"]) / max(float(sums[f"{o}_count"]), 1.0)
             for o in task.objectives}
    out = {"eval_loss": task.total_loss(means), **{f"eval_{o}_loss": means[o] for o in means}}
    for o in task.scored:
        out[f"eval_{o}_accuracy"] = float(sums[f"{o}_correct"]) / max(
            float(sums[f"{o}_count"]), 1.0)
    out["eval_perplexity"] = float(jnp.exp(out[f"eval_{task.objectives[0]}_loss"]))
    return out
