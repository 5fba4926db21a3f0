"""BERT (Devlin et al. 2018, "BERT: Pre-training of Deep Bidirectional Transformers").

    model = BertForPreTraining(config, rngs=nnx.Rngs(params=0, dropout=1))
    mlm_logits_BPV, nsp_logits_B2 = model(input_ids_BT, token_type_ids_BT,
                                          attention_mask_BT, masked_positions_BP)

Module and parameter names follow the Hugging Face BERT layout, so `jaxlm/hf/bert.py` converts
checkpoints with a table.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlm.config import ModelConfig
from jaxlm.nn.attention import padding_mask
from jaxlm.nn.layers import Dropout, Embedding, LayerNorm, Linear
from jaxlm.nn.transformer import EncoderBlock, apply_stack

# Where an encoder layer's parameters hold its attention heads (N) and its MLP neurons (F):
# what structured pruning slices and what export pads back.
HEAD_AXES = {"attention.query.kernel": 1, "attention.query.bias": 0,
             "attention.key.kernel": 1, "attention.key.bias": 0,
             "attention.value.kernel": 1, "attention.value.bias": 0,
             "attention.output.kernel": 0}
NEURON_AXES = {"mlp.intermediate.kernel": 1, "mlp.intermediate.bias": 0,
               "mlp.output.kernel": 0}


def _dtypes(config: ModelConfig) -> dict:
    return dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))


class BertEmbeddings(nnx.Module):
    """Token + learned position + segment embeddings, then layer norm and dropout (BERT 3.2)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        D, std = config.hidden_size, config.initializer_range
        self.word_embeddings = Embedding(config.vocab_size, D, ("vocab", "embed"),
                                         init_std=std, rngs=rngs, **_dtypes(config))
        self.position_embeddings = Embedding(config.max_position_embeddings, D, (None, "embed"),
                                             init_std=std, rngs=rngs, **_dtypes(config))
        self.token_type_embeddings = Embedding(config.type_vocab_size, D, (None, "embed"),
                                               init_std=std, rngs=rngs, **_dtypes(config))
        self.norm = LayerNorm(D, eps=config.layer_norm_eps, **_dtypes(config))
        self.dropout = Dropout(config.hidden_dropout, rngs=rngs)

    def __call__(self, input_ids_BT: jax.Array, token_type_ids_BT: jax.Array) -> jax.Array:
        T = input_ids_BT.shape[1]
        x_BTD = (self.word_embeddings(input_ids_BT)
                 + self.position_embeddings(jnp.arange(T))[None]
                 + self.token_type_embeddings(token_type_ids_BT))
        return self.dropout(self.norm(x_BTD))


class BertPooler(nnx.Module):
    """tanh(W h_[CLS] + b): the sequence summary used by NSP and classifiers (BERT 3)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        D = config.hidden_size
        self.dense = Linear("BD,DK->BK", (D, D), ("embed", None),
                            init_std=config.initializer_range, rngs=rngs, **_dtypes(config))

    def __call__(self, sequence_BTD: jax.Array) -> jax.Array:
        return jnp.tanh(self.dense(sequence_BTD[:, 0]))


class BertModel(nnx.Module):
    """Embeddings, L post-LN encoder blocks and (unless `pooler=False`, for the heads that
    read every position) the pooler."""

    def __init__(self, config: ModelConfig, *, pooler: bool = True, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, rngs=rngs)
        self.layers = nnx.List([EncoderBlock(config, layer=i, rngs=rngs)
                                for i in range(config.num_layers)])
        self.pooler = BertPooler(config, rngs=rngs) if pooler else None

    def __call__(self, input_ids_BT: jax.Array, token_type_ids_BT: jax.Array,
                 attention_mask_BT: jax.Array,
                 cls_only: bool = False) -> tuple[jax.Array, jax.Array | None]:
        """Returns (sequence_BTD, pooled_BD); pooled_BD is None without a pooler.

        With `cls_only` the last layer computes [CLS] alone, all the pooler reads, and
        sequence is [B, 1, D]: a classifier's inference then skips most of that layer.
        """
        check_inputs(self.config, input_ids_BT, token_type_ids_BT, attention_mask_BT)
        x_BTD = self.embeddings(input_ids_BT, token_type_ids_BT)
        mask_B11S = padding_mask(attention_mask_BT)
        x_BTD = apply_stack(self.layers, x_BTD, mask_B11S, remat=self.config.remat,
                            last_queries=1 if cls_only else 0)
        return x_BTD, self.pooler(x_BTD) if self.pooler is not None else None


class MaskedLMHead(nnx.Module):
    """Dense + GELU + layer norm, then scores against the tied word embeddings (BERT 3.1, #1).

    The output projection reuses the input embedding matrix (Press & Wolf 2017) and adds
    a per-token bias.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        D = config.hidden_size
        self.transform = Linear("BPD,DK->BPK", (D, D), ("embed", None),
                                init_std=config.initializer_range, rngs=rngs, **_dtypes(config))
        self.norm = LayerNorm(D, eps=config.layer_norm_eps, **_dtypes(config))
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), jnp.dtype(config.param_dtype)),
                              logical_axes=("vocab",))

    def __call__(self, x_BPD: jax.Array, word_embeddings: Embedding) -> jax.Array:
        h_BPD = self.norm(jax.nn.gelu(self.transform(x_BPD), approximate=False))
        logits_BPV = word_embeddings.attend(h_BPD).astype(jnp.float32)
        return logits_BPV + self.bias[...].astype(jnp.float32)


class NextSentenceHead(nnx.Module):
    """Two-way classifier on the pooled [CLS]: 0 = B follows A, 1 = B is random (BERT 3.1, #2)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.dense = Linear("BD,DK->BK", (config.hidden_size, 2), ("embed", None),
                            init_std=config.initializer_range, rngs=rngs, **_dtypes(config))

    def __call__(self, pooled_BD: jax.Array) -> jax.Array:
        return self.dense(pooled_BD).astype(jnp.float32)


def gather_positions(x_BTD: jax.Array, positions_BP: jax.Array) -> jax.Array:
    """x_BPD[b, p] = x_BTD[b, positions_BP[b, p]]: the rows the MLM head must score."""
    return jnp.take_along_axis(x_BTD, positions_BP[:, :, None], axis=1)


class BertForPreTraining(nnx.Module):
    """BERT with its two pretraining heads: masked LM and next-sentence prediction."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = BertModel(config, rngs=rngs)
        self.mlm_head = MaskedLMHead(config, rngs=rngs)
        self.nsp_head = NextSentenceHead(config, rngs=rngs)

    def __call__(self, input_ids_BT: jax.Array, token_type_ids_BT: jax.Array,
                 attention_mask_BT: jax.Array,
                 masked_positions_BP: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Returns (mlm_logits, nsp_logits_B2), logits in float32.

        `mlm_logits` is [B, P, V] at `masked_positions_BP` when given, else [B, T, V].
        Gathering before the head, as the original BERT does, shrinks its largest matmul
        from T to P rows per sequence.
        """
        sequence_BTD, pooled_BD = self.bert(input_ids_BT, token_type_ids_BT, attention_mask_BT)
        if masked_positions_BP is not None:
            check_masked_positions(masked_positions_BP, input_ids_BT.shape)
            sequence_BTD = gather_positions(sequence_BTD, masked_positions_BP)
        mlm_logits = self.mlm_head(sequence_BTD, self.bert.embeddings.word_embeddings)
        return mlm_logits, self.nsp_head(pooled_BD)


class BertForSequenceClassification(nnx.Module):
    """BERT fine-tuned for classification: pooled [CLS] -> dropout -> linear, K classes (BERT 4.1).

        logits_BK = model(input_ids_BT, token_type_ids_BT, attention_mask_BT)

    Sentence pairs are packed as [CLS] a [SEP] b [SEP] with segment ids 0 then 1, exactly as
    in pretraining.
    """

    def __init__(self, config: ModelConfig, num_labels: int, *, classifier_dropout: float,
                 rngs: nnx.Rngs):
        if num_labels < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {num_labels}")
        self.config = config
        self.bert = BertModel(config, rngs=rngs)
        self.dropout = Dropout(classifier_dropout, rngs=rngs)
        self.classifier = Linear("BD,DK->BK", (config.hidden_size, num_labels), ("embed", None),
                                 init_std=config.initializer_range, rngs=rngs, **_dtypes(config))

    def __call__(self, input_ids_BT: jax.Array, token_type_ids_BT: jax.Array,
                 attention_mask_BT: jax.Array, cls_only: bool = False) -> jax.Array:
        """Returns logits_BK in float32. `cls_only` (`BertModel`) is for inference: training
        keeps every position of the last layer, which distillation's hidden-state transfer
        reads."""
        _, pooled_BD = self.bert(input_ids_BT, token_type_ids_BT, attention_mask_BT, cls_only)
        return self.classifier(self.dropout(pooled_BD)).astype(jnp.float32)


class BertForTokenClassification(nnx.Module):
    """BERT fine-tuned for tagging (NER, POS; BERT 4.3 and 5.3): every position's hidden
    state -> dropout -> linear, K tags.

        logits_BTK = model(input_ids_BT, token_type_ids_BT, attention_mask_BT)

    Words are tagged at their first sub-word; the other positions' logits go unused.
    """

    def __init__(self, config: ModelConfig, num_labels: int, *, classifier_dropout: float,
                 rngs: nnx.Rngs):
        if num_labels < 2:
            raise ValueError(f"a tagger needs at least 2 tags, got {num_labels}")
        self.config = config
        self.bert = BertModel(config, pooler=False, rngs=rngs)
        self.dropout = Dropout(classifier_dropout, rngs=rngs)
        self.classifier = Linear("BTD,DK->BTK", (config.hidden_size, num_labels),
                                 ("embed", None), init_std=config.initializer_range, rngs=rngs,
                                 **_dtypes(config))

    def __call__(self, input_ids_BT: jax.Array, token_type_ids_BT: jax.Array,
                 attention_mask_BT: jax.Array) -> jax.Array:
        """Returns logits_BTK in float32."""
        sequence_BTD, _ = self.bert(input_ids_BT, token_type_ids_BT, attention_mask_BT)
        return self.classifier(self.dropout(sequence_BTD)).astype(jnp.float32)


class BertForQuestionAnswering(nnx.Module):
    """BERT fine-tuned for extractive QA (BERT 4.2): one linear layer scores each position as
    the answer's start and as its end.

        start_logits_BT, end_logits_BT = model(input_ids_BT, token_type_ids_BT,
                                               attention_mask_BT)

    The input is [CLS] question [SEP] context [SEP]; an answer outside the window is the
    span at [CLS] (position 0).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.bert = BertModel(config, pooler=False, rngs=rngs)
        self.qa_outputs = Linear("BTD,DK->BTK", (config.hidden_size, 2), ("embed", None),
                                 init_std=config.initializer_range, rngs=rngs, **_dtypes(config))

    def __call__(self, input_ids_BT: jax.Array, token_type_ids_BT: jax.Array,
                 attention_mask_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns (start_logits_BT, end_logits_BT) in float32."""
        sequence_BTD, _ = self.bert(input_ids_BT, token_type_ids_BT, attention_mask_BT)
        logits_BT2 = self.qa_outputs(sequence_BTD).astype(jnp.float32)
        return logits_BT2[..., 0], logits_BT2[..., 1]


def check_inputs(config: ModelConfig, input_ids_BT, token_type_ids_BT, attention_mask_BT):
    """Raises ValueError naming the problem when the inputs cannot go through the model."""
    if input_ids_BT.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids_BT.shape}")
    for name, a in (("token_type_ids", token_type_ids_BT), ("attention_mask", attention_mask_BT)):
        if a.shape != input_ids_BT.shape:
            raise ValueError(
                f"{name} has shape {a.shape} but input_ids has shape {input_ids_BT.shape}"
            )
    T = input_ids_BT.shape[1]
    if T > config.max_position_embeddings:
        raise ValueError(
            f"sequence length {T} exceeds the model's max_position_embeddings="
            f"{config.max_position_embeddings}; truncate the input or use a larger model"
        )


def check_masked_positions(masked_positions_BP, input_shape_BT):
    """Raises ValueError when the masked positions do not fit the batch they index."""
    if masked_positions_BP.ndim != 2 or masked_positions_BP.shape[0] != input_shape_BT[0]:
        raise ValueError(
            f"masked_positions must be [batch={input_shape_BT[0]}, predictions], "
            f"got shape {masked_positions_BP.shape}"
        )
