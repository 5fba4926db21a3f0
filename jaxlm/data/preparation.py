"""Preparation: corpus -> tokenizer -> tokenized documents -> instances on disk, cached.

    prepared = prepare(cfg.data, seed=cfg.train.seed, recipe="bert")   # builds once, then reuses
    loader = make_loader(prepared, "train", batch_size=32, seed=0, shuffle=True, num_epochs=None)

Everything a run needs lands in one directory, `<output_dir>/<corpus>-<key>/`, where `key`
hashes every setting that changes the bytes (the data config except paths and worker count,
the seed, the input files' sizes and mtimes, the tokenizer file's content):

    manifest.json                 settings, counts, vocab size, timing; written last
    tokenizer.json                the trained or given tokenizer
    is_continuation.npy           Bool[V], "##" pieces (whole-word masking)
    corpus/tokens.npy ...         the tokenized documents, flat (see `instances.Documents`)
    train/<key>.npy, eval/<key>.npy   one array per batch key, leading dim N, memory-mapped

The recipe picks the instances (`builders`): "bert" builds sentence pairs with masks
(`instances`), "causal_lm" packs the documents into next-token windows (`packing`),
"span_corruption" turns such windows into T5 encoder-decoder pairs (`span_corruption`).
Which recipe a model kind trains on is `jaxlm.objectives.registry`'s to say.

Another config gets another directory, so prepared data is never mixed or overwritten; a
build goes to a temporary directory that is renamed into place only when complete.
Instances are built by `num_workers` processes over shards of documents; each (pass,
document) draws from its own generator, so the bytes do not depend on the worker count.
Eval instances use one pass and a fixed seed, so that eval loss is comparable across runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np

from jaxlm import storage
from jaxlm.config import ConfigError, DataConfig
from jaxlm.data import builders
from jaxlm.data import corpus as corpus_lib
from jaxlm.data.corpus import DataError
from jaxlm.data.instances import MaskingSpec
from jaxlm.data.tokenizer import SpecialIds

log = logging.getLogger(__name__)

# What instances a text corpus becomes; `data.format=pairs` files are the "pairs" recipe.
RECIPES = ("bert", "causal_lm", "span_corruption")
VERSION = 3  # bump when the tokenizer training, instance algorithm or on-disk layout change
SPLITS = ("train", "eval")
# Settings that change where files go or how fast they are made, not what is in them.
NOT_HASHED = ("cache_dir", "output_dir", "num_workers")


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A prepared data directory, as its manifest describes it."""

    directory: Path  # holds manifest.json, tokenizer.json and the splits (a Path or a URL)
    recipe: str  # "bert", "causal_lm", "span_corruption" or "pairs" (see `prepare`)
    tokenizer_path: Path  # the tokenizer that produced the ids (a local copy for a URL)
    vocab_size: int  # V; the model's embedding table must have exactly this many rows
    num_train: int  # training instances (all dupe passes)
    num_eval: int  # held-out instances
    max_seq_length: int  # T
    max_predictions: int  # P
    special_ids: SpecialIds  # [PAD] [UNK] [CLS] [SEP] [MASK]
    dynamic_masking: bool  # train masks are drawn by the loader each epoch
    whole_word_masking: bool  # masks cover whole words
    masked_lm_prob: float  # share of tokens masked
    num_train_documents: int  # documents behind the train split
    num_eval_documents: int  # documents held out
    storage_format: str = "npy"  # "npy": one array per key; "array_record": shards (Beam)
    # array_record only, per split: the shards (path, record count) in order and the record
    # layout (`records.features`).
    shards: dict[str, list[tuple[str, int]]] = dataclasses.field(default_factory=dict)
    layouts: dict[str, dict[str, list]] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, directory: str | Path) -> Prepared:
        """Reads `<directory>/manifest.json`."""
        if not storage.is_url(directory):
            directory = Path(directory)
        try:
            m = json.loads((directory / "manifest.json").read_text())
        except FileNotFoundError:
            raise DataError(f"{directory} is not prepared data: no manifest.json") from None
        cfg = m["config"]
        tokenizer = directory / m["tokenizer"]
        return cls(
            directory=directory,
            recipe=m["recipe"],
            tokenizer_path=storage.local_copy(tokenizer),
            vocab_size=m["vocab_size"],
            num_train=m["splits"]["train"]["num_instances"],
            num_eval=m["splits"]["eval"]["num_instances"],
            max_seq_length=cfg["max_seq_length"],
            max_predictions=cfg["max_predictions_per_seq"],
            special_ids=SpecialIds(**m["special_ids"]),
            dynamic_masking=cfg["dynamic_masking"],
            whole_word_masking=cfg["whole_word_masking"],
            masked_lm_prob=cfg["masked_lm_prob"],
            num_train_documents=m["splits"]["train"]["num_documents"],
            num_eval_documents=m["splits"]["eval"]["num_documents"],
            storage_format=m.get("format", "npy"),
            shards={split: [(str(directory / name), count) for name, count in
                            m["splits"][split].get("shards", [])] for split in SPLITS},
            layouts={split: m["splits"][split].get("features", {}) for split in SPLITS},
        )

    def row_shapes(self, split: str = "train") -> dict[str, tuple[int, ...]]:
        """The shape of one instance of each stored array, e.g. {"input_ids": (T,), ...}."""
        if self.storage_format == "array_record":
            return {k: tuple(shape) for k, (_, shape) in sorted(self.layouts[split].items())}
        return {p.stem: np.load(p, mmap_mode="r").shape[1:]
                for p in sorted((self.directory / split).glob("*.npy"))}

    def masking_spec(self) -> MaskingSpec:
        """The recipe the loader uses to draw dynamic masks."""
        wwm = None
        if self.whole_word_masking:
            wwm = np.load(io.BytesIO((self.directory / "is_continuation.npy").read_bytes()))
        return MaskingSpec(self.masked_lm_prob, self.max_predictions, self.vocab_size,
                           self.special_ids, wwm)


def _settings(cfg: DataConfig, seed: int, recipe: str) -> tuple[str, list[Path], dict]:
    """The corpus name, its files and every setting that determines the prepared bytes."""
    if cfg.train_files:
        name, files = "corpus", corpus_lib.expand_files(cfg.train_files)
    else:
        name, files = "shakespeare", [corpus_lib.fetch_shakespeare(cfg.cache_dir)]
    settings = {
        "version": VERSION,
        "seed": seed,
        "recipe": recipe,
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_HASHED},
        "files": [storage.fingerprint(f) for f in files],
    }
    if cfg.tokenizer:
        path = (storage.path(cfg.tokenizer) if storage.is_url(cfg.tokenizer)
                else Path(cfg.tokenizer).expanduser())
        if not path.is_file():
            raise DataError(f"data.tokenizer: file not found: {cfg.tokenizer}")
        settings["tokenizer_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return name, files, settings


def _remove_abandoned_builds(root: Path) -> None:
    """Removes the temporary directories of builds on this host whose process is gone, since
    a build killed by a signal skips its own clean-up."""
    for tmp in root.glob(f".*.tmp-{socket.gethostname()}-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by a build that did not finish", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def locate(cfg: DataConfig, seed: int, recipe: str) -> tuple[str, list[Path], dict, Path]:
    """The corpus name, its files, the settings that determine the prepared bytes and the
    directory they name (`<output_dir>/<corpus>-<hash of settings>`)."""
    if not 0 <= seed < 2**32:
        raise ConfigError(f"train.seed: must be in [0, 2**32), got {seed}")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    if cfg.format == "pairs":  # the file already says what to predict
        recipe = "pairs"
    name, files, settings = _settings(cfg, seed, recipe)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    root = cfg.output_dir or str(Path(cfg.cache_dir) / "prepared")
    root = storage.path(root) if storage.is_url(root) else Path(root).expanduser()
    return name, files, settings, root / f"{name}-{key}"


def prepare(cfg: DataConfig, *, seed: int, recipe: str = "bert") -> Prepared:
    """Builds (or finds) the tokenizer and the train/eval instances for `cfg` and `seed`:
    BERT pairs, windows for a causal LM ("causal_lm"), T5 span corruption
    ("span_corruption"), or, with `data.format=pairs`, the file's own source/target pairs.

    Raises:
      DataError: missing files, an empty corpus, bad bytes, a tokenizer without the special
        tokens, or a download that failed; each message says what to change.
    """
    name, files, settings, directory = locate(cfg, seed, recipe)
    if (directory / "manifest.json").is_file():
        log.info("using prepared data in %s", directory)
        return Prepared.load(directory)
    if storage.is_url(directory):
        storage.make_dir(directory)
        with tempfile.TemporaryDirectory() as tmp:
            manifest = _build(cfg, seed, files, settings, Path(tmp))
            storage.upload_tree(Path(tmp), directory)
        storage.write_whole(directory / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        return Prepared.load(directory)
    root = directory.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(root)
    tmp = root / f".{directory.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        manifest = _build(cfg, seed, files, settings, tmp)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            tmp.rename(directory)
        except OSError:  # another process finished the same build first
            if not (directory / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Prepared.load(directory)


def _build(cfg: DataConfig, seed: int, files: list[Path], settings: dict, out: Path) -> dict:
    if settings["recipe"] == "pairs":
        return builders.build_source_target(cfg, files, settings, out)
    return builders.build_corpus(cfg, seed, files, settings, out)
