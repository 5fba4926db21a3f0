"""The fine-tuning run's config: labelled data and what fine-tuning adds to the recipe."""

from __future__ import annotations

import dataclasses

from jaxlm.config.loader import ConfigError
from jaxlm.config.pretraining import MeshConfig, TrainConfig

LABEL_FORMATS = ("auto", "csv", "tsv", "jsonl")


@dataclasses.dataclass(frozen=True)
class ClassifyDataConfig:
    """Labelled text for sequence classification (see `jaxlm.data.classification`).

    Files are CSV, TSV or JSONL (by extension, or `format`). Without validation/test files
    the training file is split by `validation_fraction` / `test_fraction`, seeded.
    """

    train_file: str = ""  # "" = the Pang & Lee sentence polarity data (fetched from PyPI)
    validation_file: str = ""  # "" = split off the training file
    test_file: str = ""  # "" = split off the training file
    format: str = "auto"  # "csv", "tsv", "jsonl", or "auto" from the file extension
    column_names: tuple[str, ...] = ()  # names for a CSV/TSV without a header row
    text_column: str = "text"  # the text to classify (text_a)
    text_pair_column: str = ""  # a second text (text_b) for sentence-pair tasks
    label_column: str = "label"  # string or integer labels
    validation_fraction: float = 0.1  # of the training file, when no validation_file
    test_fraction: float = 0.1  # of the training file, when no test_file
    max_seq_length: int = 128  # longer inputs are truncated (and counted in the log)
    cache_dir: str = "~/.cache/jaxlm"  # where the default data set is downloaded

    def __post_init__(self):
        if self.format not in LABEL_FORMATS:
            raise ConfigError(f"data.format: {self.format!r} is not one of {LABEL_FORMATS}")
        for key in ("validation_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"data.{key}: must be in [0, 1), got {getattr(self, key)}")
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ConfigError("data.validation_fraction + data.test_fraction must leave "
                              "examples to train on")
        if self.max_seq_length < 3:
            raise ConfigError(f"data.max_seq_length: must be at least 3 ([CLS] a [SEP]), "
                              f"got {self.max_seq_length}")
        if not self.text_column or not self.label_column:
            raise ConfigError("data.text_column and data.label_column must be named")


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    """What fine-tuning adds to the optimization recipe in `train`."""

    epochs: int = 3  # passes over the training split; sets train.steps
    warmup_fraction: float = 0.1  # of all steps, sets train.warmup_steps (BERT 4: 10%)
    patience: int = 2  # stop after this many evaluations without a better validation metric
    metric: str = "accuracy"  # validation metric for early stopping and the best checkpoint
    classifier_dropout: float = 0.1  # dropout on the pooled [CLS] before the classifier
    lora_rank: int = 0  # R > 0: LoRA adapters only (base weights frozen); 0 = full
    lora_alpha: float = 16.0  # LoRA scale numerator (alpha / R)

    def __post_init__(self):
        for key in ("epochs", "patience"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"finetune.{key}: must be positive, got {getattr(self, key)}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"finetune.warmup_fraction: must be in [0, 1), got "
                              f"{self.warmup_fraction}")
        if self.metric not in ("accuracy", "macro_f1"):
            raise ConfigError(f"finetune.metric: {self.metric!r} is not one of "
                              f"('accuracy', 'macro_f1')")
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise ConfigError(f"finetune.classifier_dropout: must be in [0, 1), got "
                              f"{self.classifier_dropout}")
        if self.lora_rank < 0:
            raise ConfigError(f"finetune.lora_rank: must be >= 0, got {self.lora_rank}")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run: a pretrained BERT, labelled data, and the recipe.

    The model's shape comes from `init_from`. `train.steps` and `train.warmup_steps` are
    derived from `finetune.epochs` and `finetune.warmup_fraction`; evaluation and
    checkpoints happen once per epoch (`train.eval_every`, `train.checkpoint_every` are set).
    """

    run_dir: str = "runs/classify"  # checkpoints, metrics, labels and results of the run
    init_from: str = ""  # a jaxlm BERT run directory or a Hugging Face BERT directory
    data: ClassifyDataConfig = ClassifyDataConfig()
    train: TrainConfig = TrainConfig()
    mesh: MeshConfig = MeshConfig()
    finetune: FinetuneOptions = FinetuneOptions()


