"""The pretraining run's config: model, data, optimization recipe and device mesh."""

from __future__ import annotations

import dataclasses

from jaxlm.config.loader import ConfigError

DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("none", "full", "dots")
ATTENTION_IMPLS = ("xla", "dot_product_attention", "pallas_tpu")
ACTIVATIONS = ("gelu", "gelu_tanh")
POSITION_EMBEDDINGS = ("learned", "sinusoidal")
DATA_FORMATS = ("text", "pairs")
SCHEDULES = ("linear", "cosine")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of the network. Defaults are BERT-base (BERT paper, 3)."""

    kind: str = "bert"  # a kind of `objectives.registry.PRETRAINING`: bert, gpt, encoder_decoder
    vocab_size: int = 30522  # V; a trained tokenizer overrides it
    hidden_size: int = 768  # D
    num_layers: int = 12  # L
    num_heads: int = 12  # N; H = D / N
    intermediate_size: int = 3072  # F, 4D in BERT
    max_position_embeddings: int = 512  # longest sequence the position table covers
    type_vocab_size: int = 2  # segments A and B
    hidden_dropout: float = 0.1  # dropout after embeddings, attention output and MLP
    attention_dropout: float = 0.1  # dropout on the attention probabilities
    layer_norm_eps: float = 1e-12  # BERT's epsilon (GPT-2: 1e-5)
    activation: str = "gelu"  # MLP nonlinearity: "gelu" (erf, BERT) or "gelu_tanh" (GPT-2)
    position_embedding: str = "learned"  # "learned" or, for encoder_decoder, "sinusoidal"
    initializer_range: float = 0.02  # stddev of the truncated-normal weight init
    qk_norm: bool = False  # normalize each head's queries and keys (QK-layernorm, no gain)
    dtype: str = "float32"  # compute dtype: float32 or bfloat16 (params stay param_dtype)
    param_dtype: str = "float32"  # storage dtype of the parameters
    remat: str = "none"  # recompute activations in backward: "none", "full", "dots" (keep matmuls)
    # "xla" (einsums, the reference), "dot_product_attention" (jax.nn's: cuDNN flash attention
    # on a GPU in 16 bits, XLA elsewhere) or "pallas_tpu" (Pallas flash attention for TPUs);
    # the last two have no attention dropout (nn.attention.attention)
    attention_impl: str = "xla"
    lora_rank: int = 0  # R > 0 adds LoRA adapters of rank R to the attention projections
    lora_alpha: float = 16.0  # LoRA scale numerator: the update B A is scaled by alpha / R
    # Structured pruning (jaxlm.compression.prune) leaves BERT layers of different widths:
    layer_heads: tuple[int, ...] = ()  # heads kept in each layer; () = num_heads in every one
    layer_intermediate: tuple[int, ...] = ()  # F of each layer; () = intermediate_size

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation: {self.activation!r} is not one of "
                              f"{ACTIVATIONS}")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ConfigError(f"model.position_embedding: {self.position_embedding!r} is not "
                              f"one of {POSITION_EMBEDDINGS}")
        if self.position_embedding == "sinusoidal" and self.kind != "encoder_decoder":
            raise ConfigError("model.position_embedding: 'sinusoidal' is only implemented for "
                              "model.kind=encoder_decoder")
        for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                    "max_position_embeddings", "type_vocab_size"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key}: must be positive, got {getattr(self, key)}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"model.hidden_size: {self.hidden_size} is not divisible by "
                f"model.num_heads={self.num_heads}"
            )
        for key in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key}: must be in [0, 1), got {getattr(self, key)}")
        for key in ("dtype", "param_dtype"):
            if getattr(self, key) not in DTYPES:
                raise ConfigError(f"model.{key}: {getattr(self, key)!r} is not one of {DTYPES}")
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"model.remat: {self.remat!r} is not one of {REMAT_POLICIES}")
        if self.lora_rank < 0:
            raise ConfigError(f"model.lora_rank: must be >= 0, got {self.lora_rank}")
        for key, full in (("layer_heads", self.num_heads),
                          ("layer_intermediate", self.intermediate_size)):
            sizes = getattr(self, key)
            if sizes and self.kind != "bert":
                raise ConfigError(f"model.{key}: only BERT layers are pruned, not {self.kind}")
            if sizes and (len(sizes) != self.num_layers or not all(0 < n <= full for n in sizes)):
                raise ConfigError(f"model.{key}: {list(sizes)} needs one size per layer "
                                  f"({self.num_layers}), each between 1 and {full}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(f"model.attention_impl: {self.attention_impl!r} is not one of "
                              f"{ATTENTION_IMPLS}")

    @property
    def head_dim(self) -> int:
        """H, the width of one attention head."""
        return self.hidden_size // self.num_heads

    def heads(self, layer: int) -> int:
        """N of encoder layer `layer` (fewer than num_heads once pruned)."""
        return self.layer_heads[layer] if self.layer_heads else self.num_heads

    def intermediate(self, layer: int) -> int:
        """F of encoder layer `layer`."""
        return self.layer_intermediate[layer] if self.layer_intermediate else self.intermediate_size


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimization recipe: steps, batch, AdamW and its schedule, logging and checkpoints.

    Defaults follow BERT's pretraining setup (BERT A.2) scaled down; `configs/*.yaml` tune them.
    """

    steps: int = 1000  # optimizer updates in the whole run (not counting micro-batches)
    batch_size: int = 32  # global sequences per update, summed over all devices and hosts
    grad_accum_steps: int = 1  # micro-batches per update; batch_size must divide evenly
    seed: int = 0  # params init, dropout and data order all derive from it
    learning_rate: float = 1e-4  # peak learning rate, reached after warmup
    warmup_steps: int = 100  # linear warmup from 0 to learning_rate (BERT: 10k of 1M)
    schedule: str = "linear"  # decay after warmup to end_learning_rate: "linear" or "cosine"
    end_learning_rate: float = 0.0  # learning rate at the last step
    weight_decay: float = 0.01  # AdamW decoupled decay, not applied to biases and LN scales
    adam_b1: float = 0.9  # first-moment decay
    adam_b2: float = 0.999  # second-moment decay
    adam_eps: float = 1e-6  # BERT's epsilon (larger than Adam's 1e-8)
    grad_clip_norm: float = 1.0  # clip the global gradient norm to this; 0 disables
    max_nonfinite_steps: int = 10  # stop after this many consecutive NaN/inf steps
    log_every: int = 10  # steps between metrics lines (metrics.jsonl, progress, TensorBoard)
    eval_every: int = 100  # steps between evaluations on the held-out split; 0 disables
    eval_steps: int = 20  # held-out batches per evaluation; 0 reads the whole split
    checkpoint_every: int = 500  # steps between checkpoints (one is also written at the end)
    keep_checkpoints: int = 3  # the last K checkpoints kept, plus the best by eval MLM accuracy
    async_checkpoint: bool = True  # write checkpoints in a background thread
    # When the data settings changed since the checkpoint (batch size, data files, ...):
    # resume the weights and optimizer and read the data from its start, instead of refusing.
    restart_data: bool = False
    tensorboard: bool = True  # also write TensorBoard event files to run_dir/tensorboard
    progress_bar: bool = True  # show a tqdm bar with loss, tokens/s and ETA

    def __post_init__(self):
        for key in ("steps", "batch_size", "grad_accum_steps", "log_every", "keep_checkpoints",
                    "max_nonfinite_steps", "checkpoint_every"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"train.{key}: must be positive, got {getattr(self, key)}")
        for key in ("warmup_steps", "eval_every", "eval_steps", "seed", "learning_rate",
                    "end_learning_rate", "weight_decay", "adam_eps", "grad_clip_norm"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key}: must be >= 0, got {getattr(self, key)}")
        if self.batch_size % self.grad_accum_steps:
            raise ConfigError(
                f"train.batch_size: {self.batch_size} is not divisible by "
                f"train.grad_accum_steps={self.grad_accum_steps}"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule: {self.schedule!r} is not one of {SCHEDULES}")
        for key in ("adam_b1", "adam_b2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"train.{key}: must be in [0, 1), got {getattr(self, key)}")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """How devices are arranged: data x fsdp x tensor = all devices (`training.sharding`)."""

    data: int = -1  # data-parallel replicas; -1 fills the devices the other axes leave
    fsdp: int = 1  # parameter/optimizer shards (ZeRO-3 style), also splits the batch
    tensor: int = 1  # Megatron-style tensor parallelism over attention heads and MLP width
    distributed: bool = False  # call jax.distributed.initialize() first (multi-host runs)

    def __post_init__(self):
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        for key, size in sizes.items():
            if size == 0 or size < -1:
                raise ConfigError(f"mesh.{key}: must be positive or -1 (fill), got {size}")
        if list(sizes.values()).count(-1) > 1:
            raise ConfigError("mesh: at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")


ENCODING_ERRORS = ("strict", "replace")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Corpus, tokenizer and BERT pretraining instances (see `jaxlm.data`).

    Defaults follow google-research/bert `create_pretraining_data.py` for 128-token sequences,
    on the complete works of Shakespeare.
    """

    train_files: tuple[str, ...] = ()  # text files or globs; () = Shakespeare
    format: str = "text"  # "text": BERT format documents; "pairs": source<TAB>target lines
    cache_dir: str = "~/.cache/jaxlm"  # downloads and extracted corpora
    output_dir: str = ""  # where prepared data goes; "" = <cache_dir>/prepared
    tokenizer: str = ""  # an existing tokenizer.json or vocab.txt; "" = train a WordPiece one
    vocab_size: int = 8192  # size of a trained WordPiece vocabulary (specials included)
    tokenizer_sample_lines: int = 0  # train the tokenizer on this many lines; 0 = every line
    lowercase: bool = True  # lowercase and strip accents (uncased BERT)
    max_seq_length: int = 128  # T, tokens per instance including [CLS] and two [SEP]
    max_predictions_per_seq: int = 20  # P, masked positions per instance (80 for T=512)
    max_target_length: int = 32  # target tokens per pair, [SEP] included (format=pairs)
    masked_lm_prob: float = 0.15  # fraction of tokens masked (BERT 3.1, Task #1)
    short_seq_prob: float = 0.1  # chance of a shorter random target length per document
    dupe_factor: int = 10  # passes over the training documents, each with fresh pairs/masks
    whole_word_masking: bool = False  # mask all WordPiece pieces of a word together
    dynamic_masking: bool = False  # re-draw masks each epoch (RoBERTa); False = static (BERT)
    eval_fraction: float = 0.05  # share of documents held out for evaluation (at least one)
    num_workers: int = 0  # preprocessing processes; 0 = one per CPU core
    encoding_errors: str = "strict"  # non-UTF-8 input: "strict" raises, "replace" uses U+FFFD

    def __post_init__(self):
        for key in ("vocab_size", "max_predictions_per_seq", "dupe_factor"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"data.{key}: must be positive, got {getattr(self, key)}")
        if self.vocab_size < 6:
            raise ConfigError(f"data.vocab_size: must leave room beyond the 5 special tokens, "
                              f"got {self.vocab_size}")
        if self.max_seq_length < 5:
            raise ConfigError(f"data.max_seq_length: must be at least 5 ([CLS] A [SEP] B [SEP] "
                              f"with one token each), got {self.max_seq_length}")
        if self.format == "text" and self.max_predictions_per_seq > self.max_seq_length - 3:
            raise ConfigError(
                f"data.max_predictions_per_seq: {self.max_predictions_per_seq} exceeds the "
                f"{self.max_seq_length - 3} maskable tokens of data.max_seq_length="
                f"{self.max_seq_length}"
            )
        if self.format not in DATA_FORMATS:
            raise ConfigError(f"data.format: {self.format!r} is not one of {DATA_FORMATS}")
        if self.max_target_length < 2:
            raise ConfigError(f"data.max_target_length: must be at least 2 (a token and "
                              f"[SEP]), got {self.max_target_length}")
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ConfigError(f"data.masked_lm_prob: must be in (0, 1), got {self.masked_lm_prob}")
        for key in ("short_seq_prob", "eval_fraction"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"data.{key}: must be in [0, 1), got {getattr(self, key)}")
        if self.tokenizer_sample_lines < 0:
            raise ConfigError(f"data.tokenizer_sample_lines: must be >= 0, got "
                              f"{self.tokenizer_sample_lines}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers: must be >= 0, got {self.num_workers}")
        if self.encoding_errors not in ENCODING_ERRORS:
            raise ConfigError(
                f"data.encoding_errors: {self.encoding_errors!r} is not one of {ENCODING_ERRORS}"
            )
        if any(not f.strip() for f in self.train_files):
            raise ConfigError(f"data.train_files: empty path in {self.train_files}")


@dataclasses.dataclass(frozen=True)
class DistillOptions:
    """Knowledge distillation (`jaxlm.compression.distill`): from a fine-tuned teacher when
    fine-tuning, from a pretrained BERT's masked-LM head when pretraining a BERT."""

    teacher: str = ""  # a jaxlm run or Hugging Face directory; "" = no teacher
    alpha: float = 0.5  # weight of the soft-target loss; the labels' cross entropy gets 1 - alpha
    temperature: float = 2.0  # T: both distributions are softmax(logits / T)
    student_layers: int = 0  # fine-tuning without init_from: the student is this many of the
    # teacher's layers, evenly spaced (DistilBERT); 0 = half of them
    # Layer transfer (TinyBERT, MiniLM), each student layer from one teacher layer:
    hidden_weight: float = 0.0  # weight of the MSE between their outputs (through a learned
    # projection when the widths differ)
    attention_weight: float = 0.0  # weight of the KL between their attention distributions
    layer_map: tuple[int, ...] = ()  # the teacher layer (from 0) of each student layer;
    # () = uniform, the last from the last

    def __post_init__(self):
        for key in ("hidden_weight", "attention_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"distill.{key}: must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"distill.alpha: must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError(f"distill.temperature: must be positive, got {self.temperature}")
        if self.student_layers < 0:
            raise ConfigError(f"distill.student_layers: must be >= 0, got "
                              f"{self.student_layers}")


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: where its output goes and how the model is built."""

    run_dir: str = "runs/default"  # every output of a run: checkpoints, metrics, plots
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    mesh: MeshConfig = MeshConfig()
    distill: DistillOptions = DistillOptions()  # a BERT student of a pretrained BERT teacher

    def __post_init__(self):
        if self.data.format == "pairs" and self.model.kind != "encoder_decoder":
            raise ConfigError(f"data.format: 'pairs' trains an encoder-decoder; "
                              f"model.kind={self.model.kind!r} needs data.format=text")
        if self.distill.teacher and self.model.kind != "bert":
            raise ConfigError(f"distill.teacher: masked-LM distillation trains a BERT, not "
                              f"model.kind={self.model.kind}")
        if self.distill.student_layers:
            raise ConfigError("distill.student_layers: a pretraining student is `model`, "
                              "freshly initialised; the option is for fine-tuning")


