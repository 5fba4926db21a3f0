"""The fine-tuning run's config: labelled data and what fine-tuning adds to the recipe."""

from __future__ import annotations

import dataclasses

from jaxlm.config.loader import ConfigError
from jaxlm.config.pretraining import DistillOptions, MeshConfig, TrainConfig

# Fine-tuning tasks (BERT 4): the file formats each reads, its built-in data sets (the first
# is used when no train_file is given) and its validation metrics (the first is the default).
TASKS = {
    "sequence_classification": {"formats": ("csv", "tsv", "jsonl"), "datasets": ("polarity",),
                                "metrics": ("accuracy", "macro_f1")},
    "token_classification": {"formats": ("conll", "word_tag", "jsonl"),
                             "datasets": ("wnut16", "wsj_pos"), "metrics": ("f1", "accuracy")},
    "question_answering": {"formats": ("squad",), "datasets": ("squad_shifts",),
                           "metrics": ("f1", "exact_match")},
}


@dataclasses.dataclass(frozen=True)
class FinetuneDataConfig:
    """Labelled data for a fine-tuning task (`jaxlm.data.classification`, `.tagging`,
    `.squad`).

    Classification files are CSV, TSV or JSONL; tagging files CoNLL columns, `word/TAG`
    lines or JSONL; question answering files SQuAD JSON (by extension, or `format`). Without
    validation/test files the training file is split by `validation_fraction` /
    `test_fraction`, seeded.
    """

    train_file: str = ""  # "" = the built-in data set `dataset`
    dataset: str = ""  # "" = the task's first (finetune.TASKS): polarity, wnut16, squad_shifts
    validation_file: str = ""  # "" = split off the training file
    test_file: str = ""  # "" = split off the training file
    format: str = "auto"  # one of the task's formats, or "auto" from the file extension
    column_names: tuple[str, ...] = ()  # names for a CSV/TSV without a header row
    text_column: str = "text"  # the text to classify (text_a)
    text_pair_column: str = ""  # a second text (text_b) for sentence-pair tasks
    label_column: str = "label"  # string or integer labels
    tag_column: int = -1  # the tag's column in CoNLL files (the word is column 0)
    validation_fraction: float = 0.1  # of the training file, when no validation_file
    test_fraction: float = 0.1  # of the training file, when no test_file
    max_train_examples: int = 0  # > 0: a seeded sample of the training split (a CPU budget)
    max_eval_examples: int = 0  # > 0: a seeded sample of validation and of test
    max_seq_length: int = 128  # longer inputs are truncated (and counted in the log)
    max_query_length: int = 64  # QA: question tokens kept (BERT's SQuAD recipe)
    doc_stride: int = 128  # QA: a long context's windows start this many tokens apart
    max_answer_length: int = 30  # QA: the longest answer considered, in tokens
    n_best: int = 20  # QA: start and end candidates per window
    cache_dir: str = "~/.cache/jaxlm"  # where the built-in data sets are downloaded

    def __post_init__(self):
        formats = {f for task in TASKS.values() for f in task["formats"]}
        if self.format != "auto" and self.format not in formats:
            raise ConfigError(f"data.format: {self.format!r} is not 'auto' or one of "
                              f"{tuple(sorted(formats))}")
        for key in ("validation_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"data.{key}: must be in [0, 1), got {getattr(self, key)}")
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ConfigError("data.validation_fraction + data.test_fraction must leave "
                              "examples to train on")
        if self.max_seq_length < 3:
            raise ConfigError(f"data.max_seq_length: must be at least 3 ([CLS] a [SEP]), "
                              f"got {self.max_seq_length}")
        for key in ("max_query_length", "doc_stride", "max_answer_length", "n_best"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}: must be positive, got {getattr(self, key)}")
        for key in ("max_train_examples", "max_eval_examples"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key}: must be >= 0, got {getattr(self, key)}")
        if not self.text_column or not self.label_column:
            raise ConfigError("data.text_column and data.label_column must be named")


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    """What fine-tuning adds to the optimization recipe in `train`."""

    task: str = "sequence_classification"  # or token_classification, question_answering
    epochs: int = 3  # passes over the training split; sets train.steps
    warmup_fraction: float = 0.1  # of all steps, sets train.warmup_steps (BERT 4: 10%)
    patience: int = 2  # stop after this many evaluations without a better validation metric
    metric: str = ""  # validation metric for early stopping and the best checkpoint; "" =
    # the task's first (finetune.TASKS: accuracy; entity f1 for tagging; f1 for QA)
    classifier_dropout: float = 0.1  # dropout before the classifier or tagger
    lora_rank: int = 0  # R > 0: LoRA adapters only (base weights frozen); 0 = full
    lora_alpha: float = 16.0  # LoRA scale numerator (alpha / R)

    def __post_init__(self):
        for key in ("epochs", "patience"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"finetune.{key}: must be positive, got {getattr(self, key)}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"finetune.warmup_fraction: must be in [0, 1), got "
                              f"{self.warmup_fraction}")
        if self.task not in TASKS:
            raise ConfigError(f"finetune.task: {self.task!r} is not one of {tuple(TASKS)}")
        metrics = TASKS[self.task]["metrics"]
        if self.metric and self.metric not in metrics:
            raise ConfigError(f"finetune.metric: {self.metric!r} is not one of {metrics} "
                              f"(finetune.task={self.task})")
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise ConfigError(f"finetune.classifier_dropout: must be in [0, 1), got "
                              f"{self.classifier_dropout}")
        if self.lora_rank < 0:
            raise ConfigError(f"finetune.lora_rank: must be >= 0, got {self.lora_rank}")


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    """Pruning while fine-tuning (`jaxlm.compression.prune`)."""

    heads: float = 0.0  # fraction of all attention heads removed by importance before training
    neurons: float = 0.0  # fraction of all MLP neurons removed the same way
    # (both need init_from to be a model fine-tuned for the task: they score its loss)
    sparsity: float = 0.0  # fraction of each encoder weight matrix zeroed by magnitude
    begin: float = 0.0  # fraction of the steps at which gradual magnitude pruning starts
    end: float = 0.7  # fraction at which it reaches `sparsity`; the rest trains the mask fixed
    # (with `sparsity`, no early stopping, and the best checkpoint is one from `end` on)
    every: int = 10  # steps between two mask updates

    def __post_init__(self):
        for key in ("heads", "neurons", "sparsity"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"prune.{key}: must be in [0, 1), got {getattr(self, key)}")
        if not 0.0 <= self.begin <= self.end <= 1.0:
            raise ConfigError(f"prune.begin, prune.end: need 0 <= begin <= end <= 1, got "
                              f"{self.begin} and {self.end}")
        if self.every <= 0:
            raise ConfigError(f"prune.every: must be positive, got {self.every}")

    @property
    def structured(self) -> bool:
        return bool(self.heads or self.neurons)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run: a pretrained BERT, a task and its labelled data, and the recipe.

    The model's shape comes from `init_from`. `train.steps` and `train.warmup_steps` are
    derived from `finetune.epochs` and `finetune.warmup_fraction`; evaluation and
    checkpoints happen once per epoch (`train.eval_every`, `train.checkpoint_every` are set).
    """

    run_dir: str = "runs/classify"  # checkpoints, metrics, labels and results of the run
    init_from: str = ""  # a jaxlm BERT run directory or a Hugging Face BERT directory
    data: FinetuneDataConfig = FinetuneDataConfig()
    train: TrainConfig = TrainConfig()
    mesh: MeshConfig = MeshConfig()
    finetune: FinetuneOptions = FinetuneOptions()
    distill: DistillOptions = DistillOptions()
    prune: PruneOptions = PruneOptions()

    def __post_init__(self):
        task = TASKS[self.finetune.task]
        if self.data.format not in ("auto", *task["formats"]):
            raise ConfigError(f"data.format: {self.data.format!r} is not a format of "
                              f"{self.finetune.task} {task['formats']}")
        if self.data.dataset and self.data.dataset not in task["datasets"]:
            raise ConfigError(f"data.dataset: {self.data.dataset!r} is not a data set of "
                              f"{self.finetune.task} {task['datasets']}")
        if self.distill.teacher and self.finetune.lora_rank and not self.init_from:
            raise ConfigError("finetune.lora_rank with distill.teacher needs init_from: LoRA "
                              "trains adapters on a pretrained student, not on the teacher's "
                              "layers")
        if self.prune.sparsity and self.finetune.lora_rank:
            raise ConfigError("prune.sparsity with finetune.lora_rank: magnitude pruning needs "
                              "the encoder's weights trained, LoRA freezes them")

    @property
    def metric(self) -> str:
        """The validation metric in use (the task's first unless finetune.metric is set)."""
        return self.finetune.metric or TASKS[self.finetune.task]["metrics"][0]

    @property
    def dataset(self) -> str:
        """The built-in data set in use when no train_file is given."""
        return self.data.dataset or TASKS[self.finetune.task]["datasets"][0]
