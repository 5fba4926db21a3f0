"""What each model kind learns: its module, its batch, its losses and its FLOPs.

The trainer, the checkpoints and the metrics are shared by every kind; a `Task` holds what
differs. Each task has named objectives ("mlm" and "nsp" for BERT, "lm" for GPT); the loss
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

from jaxlm import losses
from jaxlm.bert import BertForPreTraining, BertForSequenceClassification
from jaxlm.config import ModelConfig
from jaxlm.encoder_decoder import EncoderDecoderTransformer
from jaxlm.gpt import GPTLanguageModel


@dataclasses.dataclass(frozen=True)
class Task:
    objectives: tuple[str, ...]  # loss terms, e.g. ("mlm", "nsp")
    data: str  # its data: "bert", "causal_lm", "span_corruption" (data.prepare), "classification"
    build: typing.Callable[[ModelConfig, nnx.Rngs], nnx.Module]
    counts: typing.Callable[[dict], dict]  # batch -> {objective: float32 predictions}
    sums: typing.Callable[[nnx.Module, dict], dict]  # -> {<obj>_loss, <obj>_correct}
    flops: typing.Callable[[ModelConfig, dict], float]  # cfg, {key: batch shape} -> FLOPs
    tokens: typing.Callable[[dict], int]  # {key: batch shape} -> tokens read per step


def _hits(logits_BXV: jax.Array, labels_BX: jax.Array, weights_BX: jax.Array) -> jax.Array:
    return jnp.sum(losses.top1_correct(logits_BXV, labels_BX) * weights_BX)


def bert_sums(module: BertForPreTraining, batch: dict) -> dict:
    """Masked-LM and next-sentence cross entropy and hits, summed (BERT 3.1)."""
    mlm_logits_BPV, nsp_logits_B2 = module(batch["input_ids"], batch["token_type_ids"],
                                           batch["attention_mask"], batch["masked_positions"])
    w_BP = batch["masked_weights"].astype(jnp.float32)
    labels_BP, nsp_B1 = batch["masked_ids"], batch["next_sentence_label"][:, None]
    nsp_logits_B12 = nsp_logits_B2[:, None]
    return {
        "mlm_loss": jnp.sum(losses.cross_entropy(mlm_logits_BPV, labels_BP) * w_BP),
        "mlm_correct": _hits(mlm_logits_BPV, labels_BP, w_BP),
        "nsp_loss": jnp.sum(losses.cross_entropy(nsp_logits_B12, nsp_B1)),
        "nsp_correct": _hits(nsp_logits_B12, nsp_B1, 1.0).astype(jnp.float32),
    }


def bert_counts(batch: dict) -> dict:
    return {"mlm": jnp.sum(batch["masked_weights"].astype(jnp.float32)),
            "nsp": jnp.asarray(batch["next_sentence_label"].shape[0], jnp.float32)}


def _layer_flops(cfg: ModelConfig, length: int) -> int:
    """Forward matmul FLOPs of one encoder or decoder self-attention layer per token: Q, K,
    V, output projections 4*2*D*D, MLP 2*2*D*F, attention scores and mix 2*2*T*D."""
    D, F = cfg.hidden_size, cfg.intermediate_size
    return 8 * D * D + 4 * D * F + 4 * length * D


def bert_train_flops(cfg: ModelConfig, batch: int, length: int, predictions: int) -> float:
    """Matmul FLOPs of one training step of BertForPreTraining (forward + backward).

    Per token and layer: Q, K, V, output projections 4*2*D*D, MLP 2*2*D*F, attention scores
    and mix 2*2*T*D. Per masked position: transform 2*D*D and tied output 2*D*V. Per
    sequence: pooler 2*D*D and NSP 2*D*2. Backward is twice the forward (Kaplan et al. 2020).
    """
    D, L, V = cfg.hidden_size, cfg.num_layers, cfg.vocab_size
    per_token = L * _layer_flops(cfg, length)
    per_prediction = 2 * D * D + 2 * D * V
    per_sequence = 2 * D * D + 4 * D
    forward = batch * (length * per_token + predictions * per_prediction + per_sequence)
    return 3.0 * forward


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


def gpt_train_flops(cfg: ModelConfig, batch: int, length: int) -> float:
    """Matmul FLOPs of one training step of GPTLanguageModel: the encoder's per-token
    count (causal attention still computes all T x T scores) plus the tied output 2*D*V at
    every position; times 3 for forward + backward."""
    per_token = cfg.num_layers * _layer_flops(cfg, length) + 2 * cfg.hidden_size * cfg.vocab_size
    return 3.0 * batch * length * per_token


def encoder_decoder_sums(module: EncoderDecoderTransformer, batch: dict) -> dict:
    """Cross entropy and hits of each real target token given the source and the target
    before it (teacher forcing), summed."""
    logits_BTV = module(batch["source_ids"], batch["source_mask"], batch["decoder_input_ids"])
    targets_BT = batch["target_ids"]
    w_BT = batch["target_weights"].astype(jnp.float32)
    return {"lm_loss": jnp.sum(losses.cross_entropy(logits_BTV, targets_BT) * w_BT),
            "lm_correct": _hits(logits_BTV, targets_BT, w_BT)}


def encoder_decoder_train_flops(cfg: ModelConfig, batch: int, source: int,
                                target: int) -> float:
    """Encoder layers over S source tokens; decoder layers over T target tokens, each with
    cross-attention (Q and output projections on T, K and V on S: 2*2*D*D per token each,
    scores and mix 2*2*S*D per target token); the tied output 2*D*V per target token."""
    D, L, V = cfg.hidden_size, cfg.num_layers, cfg.vocab_size
    encoder = source * L * _layer_flops(cfg, source)
    cross = L * (target * (4 * D * D + 4 * source * D) + source * 4 * D * D)
    decoder = target * (L * _layer_flops(cfg, target) + 2 * D * V) + cross
    return 3.0 * batch * (encoder + decoder)


def classify_sums(module: BertForSequenceClassification, batch: dict) -> dict:
    """Cross entropy, hits and the confusion matrix of the classifier, summed over real
    examples (`example_weights` 0 marks the padding rows of a last, partial batch)."""
    logits_BK = module(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    labels_B, w_B = batch["label"], batch["example_weights"].astype(jnp.float32)
    K = logits_BK.shape[-1]
    truth_BK = jax.nn.one_hot(labels_B, K) * w_B[:, None]
    predicted_BK = jax.nn.one_hot(jnp.argmax(logits_BK, -1), K)
    return {"cls_loss": jnp.sum(losses.cross_entropy(logits_BK[:, None], labels_B[:, None])[:, 0]
                                * w_B),
            "cls_correct": _hits(logits_BK, labels_B, w_B),
            "cls_confusion": jnp.einsum("BK,BJ->KJ", truth_BK, predicted_BK)}


def classify_train_flops(cfg: ModelConfig, batch: int, length: int, num_labels: int) -> float:
    """The encoder's matmul FLOPs plus pooler 2*D*D and classifier 2*D*K per sequence, times
    3 for forward + backward (an upper bound under LoRA, where frozen weights get no
    gradient)."""
    D = cfg.hidden_size
    encoder = length * cfg.num_layers * _layer_flops(cfg, length)
    per_sequence = encoder + 2 * D * D + 2 * D * num_labels
    return 3.0 * batch * per_sequence


def classify_task(num_labels: int, classifier_dropout: float) -> Task:
    """Sequence classification into `num_labels` classes (BERT 4.1), objective "cls"."""
    return Task(
        objectives=("cls",), data="classification",
        build=lambda cfg, rngs: BertForSequenceClassification(
            cfg, num_labels, classifier_dropout=classifier_dropout, rngs=rngs),
        counts=lambda batch: {"cls": jnp.sum(batch["example_weights"].astype(jnp.float32))},
        sums=classify_sums,
        flops=lambda cfg, s: classify_train_flops(cfg, *s["input_ids"], num_labels),
        tokens=lambda s: s["input_ids"][0] * s["input_ids"][1])


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


TASKS = {
    "bert": Task(objectives=("mlm", "nsp"), data="bert",
                 build=lambda cfg, rngs: BertForPreTraining(cfg, rngs=rngs),
                 counts=bert_counts, sums=bert_sums,
                 flops=lambda cfg, s: bert_train_flops(cfg, *s["input_ids"],
                                                       s["masked_positions"][1]),
                 tokens=lambda s: s["input_ids"][0] * s["input_ids"][1]),
    "gpt": Task(objectives=("lm",), data="causal_lm",
                build=lambda cfg, rngs: GPTLanguageModel(cfg, rngs=rngs),
                counts=lm_counts, sums=lm_sums,
                flops=lambda cfg, s: gpt_train_flops(cfg, *s["input_ids"]),
                tokens=lambda s: s["input_ids"][0] * s["input_ids"][1]),
    "encoder_decoder": Task(
        objectives=("lm",), data="span_corruption",
        build=lambda cfg, rngs: EncoderDecoderTransformer(cfg, rngs=rngs),
        counts=target_counts, sums=encoder_decoder_sums,
        flops=lambda cfg, s: encoder_decoder_train_flops(cfg, *s["source_ids"],
                                                         s["target_ids"][1]),
        tokens=lambda s: s["source_ids"][0] * (s["source_ids"][1] + s["target_ids"][1])),
}


def train_metric_keys(task: Task) -> tuple[str, ...]:
    """The per-step metrics the train step returns and `metrics.jsonl` averages."""
    per_objective = tuple(f"{o}_{m}" for m in ("loss", "accuracy") for o in task.objectives)
    return ("loss", *per_objective, "learning_rate", "grad_norm")


def eval_metrics(task: Task, sums: dict) -> dict:
    """Held-out loss, per-objective loss and accuracy, and the first objective's perplexity,
    from sums (`<obj>_loss`, `<obj>_correct`, `<obj>_count`) added over the eval batches."""
    out = {"eval_loss": 0.0}
    for o in task.objectives:
        count = max(float(sums[f"{o}_count"]), 1.0)
        out[f"eval_{o}_loss"] = float(sums[f"{o}_loss"]) / count
        out["eval_loss"] += out[f"eval_{o}_loss"]
    for o in task.objectives:
        out[f"eval_{o}_accuracy"] = float(sums[f"{o}_correct"]) / max(
            float(sums[f"{o}_count"]), 1.0)
    out["eval_perplexity"] = float(jnp.exp(out[f"eval_{task.objectives[0]}_loss"]))
    return out
