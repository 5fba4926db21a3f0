"""`python -m jaxlm.export --checkpoint RUN --out DIR`: a jaxlm BERT run as a Hugging Face
directory that `transformers` loads (config.json, model.safetensors, tokenizer files)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxlm.hf.bert import save_pretrained, save_tokenizer
from jaxlm.inference.load import load_finetuned, load_run
from jaxlm.training.checkpoint import open_latest

# Weight files transformers would load instead of, or beside, the exported model.safetensors.
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.h5", "*.msgpack", "*.index.json")


def export(run_dir: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """A jaxlm run's newest checkpoint and tokenizer as a Hugging Face directory: a
    pretraining run as BertForPreTraining, a fine-tuning run as the transformers class of
    its head (BertForSequenceClassification, BertForTokenClassification,
    BertForQuestionAnswering; LoRA adapters merged into the weights).

    Raises:
      FileExistsError: `out` is a file, or a non-empty directory and not `overwrite`; with
        `overwrite` the files jaxlm writes are replaced and other weight files removed.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; --out takes the directory to write")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass --overwrite to replace the model "
                              f"files in it")
    manager, _, saved = open_latest(run_dir)
    manager.close()
    labels = None
    if "labels" in saved:
        model, labels, tokenizer_path, _ = load_finetuned(run_dir)
        labels = labels or None  # question answering has none
    else:
        model, _, tokenizer_path = load_run(run_dir, ("bert",), "export")
    if out.is_dir():
        for stale in (p for pattern in WEIGHT_FILES for p in out.glob(pattern)):
            stale.unlink()
    directory = save_pretrained(model, model.config, out, labels)
    save_tokenizer(tokenizer_path, model.config, directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.export", description=(
        "Write a jaxlm BERT run as a Hugging Face directory."))
    parser.add_argument("--checkpoint", required=True,
                        help="a jaxlm BERT pretraining or fine-tuning run directory")
    parser.add_argument("--out", required=True, help="the directory to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the model files of a non-empty --out directory")
    args = parser.parse_args(argv)
    try:
        print(export(args.checkpoint, args.out, args.overwrite))
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
