"""The model kinds, in one table: for each, the module it builds, its loss terms, its FLOPs
and the data recipe it trains on.

Pretraining kinds are chosen by `model.kind` (`PRETRAINING`); a fine-tuning task puts a
head on a pretrained encoder and is built for its number of labels (`finetuning_task`).
"""

from __future__ import annotations

from jaxlm.config import ConfigError
from jaxlm.models.bert import (
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from jaxlm.models.encoder_decoder import EncoderDecoderTransformer
from jaxlm.models.gpt import GPTLanguageModel
from jaxlm.objectives import flops
from jaxlm.objectives.tasks import (
    Task,
    bert_counts,
    bert_sums,
    classify_sums,
    encoder_decoder_sums,
    example_counts,
    lm_counts,
    lm_sums,
    span_sums,
    tag_counts,
    tag_sums,
    target_counts,
)

PRETRAINING: dict[str, Task] = {
    "bert": Task(objectives=("mlm", "nsp"), recipe="bert",
                 build=lambda cfg, rngs: BertForPreTraining(cfg, rngs=rngs),
                 counts=bert_counts, sums=bert_sums,
                 flops=lambda cfg, s: flops.bert_train_flops(cfg, *s["input_ids"],
                                                             s["masked_positions"][1]),
                 tokens=lambda s: s["input_ids"][0] * s["input_ids"][1]),
    "gpt": Task(objectives=("lm",), recipe="causal_lm",
                build=lambda cfg, rngs: GPTLanguageModel(cfg, rngs=rngs),
                counts=lm_counts, sums=lm_sums,
                flops=lambda cfg, s: flops.gpt_train_flops(cfg, *s["input_ids"]),
                tokens=lambda s: s["input_ids"][0] * s["input_ids"][1]),
    "encoder_decoder": Task(
        objectives=("lm",), recipe="span_corruption",
        build=lambda cfg, rngs: EncoderDecoderTransformer(cfg, rngs=rngs),
        counts=target_counts, sums=encoder_decoder_sums,
        flops=lambda cfg, s: flops.encoder_decoder_train_flops(cfg, *s["source_ids"],
                                                               s["target_ids"][1]),
        tokens=lambda s: s["source_ids"][0] * (s["source_ids"][1] + s["target_ids"][1])),
}


def pretraining_task(kind: str) -> Task:
    """The task of `model.kind`.

    Raises:
      ConfigError: an unknown kind, naming the known ones.
    """
    if kind not in PRETRAINING:
        raise ConfigError(f"model.kind: {kind!r} is not one of {tuple(PRETRAINING)}")
    return PRETRAINING[kind]


def classify_task(num_labels: int, classifier_dropout: float) -> Task:
    """Sequence classification into `num_labels` classes (BERT 4.1), objective "cls"."""
    return Task(
        objectives=("cls",), recipe="classification",
        build=lambda cfg, rngs: BertForSequenceClassification(
            cfg, num_labels, classifier_dropout=classifier_dropout, rngs=rngs),
        counts=example_counts("cls"),
        sums=classify_sums,
        flops=lambda cfg, s: flops.classify_train_flops(cfg, *s["input_ids"], num_labels),
        tokens=lambda s: s["input_ids"][0] * s["input_ids"][1])



def token_classify_task(num_labels: int, classifier_dropout: float) -> Task:
    """Tagging each word with one of `num_labels` tags (NER, POS), objective "tag"."""
    return Task(
        objectives=("tag",), recipe="token_classification",
        build=lambda cfg, rngs: BertForTokenClassification(
            cfg, num_labels, classifier_dropout=classifier_dropout, rngs=rngs),
        counts=tag_counts, sums=tag_sums,
        flops=lambda cfg, s: flops.token_head_train_flops(cfg, *s["input_ids"], num_labels),
        tokens=lambda s: s["input_ids"][0] * s["input_ids"][1])


def question_answering_task() -> Task:
    """Extractive question answering (answer start and end positions), objective "span"."""
    return Task(
        objectives=("span",), recipe="question_answering",
        build=lambda cfg, rngs: BertForQuestionAnswering(cfg, rngs=rngs),
        counts=example_counts("span"), sums=span_sums,
        flops=lambda cfg, s: flops.token_head_train_flops(cfg, *s["input_ids"], 2),
        tokens=lambda s: s["input_ids"][0] * s["input_ids"][1])


def finetuning_task(name: str, num_labels: int, classifier_dropout: float) -> Task:
    """The task of `finetune.task` (config.TASKS), with `num_labels` labels or tags."""
    if name == "token_classification":
        return token_classify_task(num_labels, classifier_dropout)
    if name == "question_answering":
        return question_answering_task()
    return classify_task(num_labels, classifier_dropout)
