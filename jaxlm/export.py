"""`python -m jaxlm.export --checkpoint RUN --out DIR`: a jaxlm BERT run as a Hugging Face
directory that `transformers` loads (config.json, model.safetensors, tokenizer files)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxlm.hf.bert import save_pretrained, save_tokenizer
from jaxlm.inference.load import load_classifier, load_run
from jaxlm.training.checkpoint import open_latest


def export(run_dir: str | Path, out: str | Path) -> Path:
    """A jaxlm run's newest checkpoint and tokenizer as a Hugging Face directory: a
    pretraining run as BertForPreTraining, a fine-tuning run as
    BertForSequenceClassification (LoRA adapters merged into the weights)."""
    manager, _, saved = open_latest(run_dir)
    manager.close()
    if "labels" in saved:
        model, labels, tokenizer_path, _ = load_classifier(run_dir)
        directory = save_pretrained(model, model.config, out, labels)
    else:
        model, cfg, tokenizer_path = load_run(run_dir, ("bert",), "export")
        directory = save_pretrained(model, cfg.model, out)
    save_tokenizer(tokenizer_path, model.config, directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.export", description=(
        "Write a jaxlm BERT run as a Hugging Face directory."))
    parser.add_argument("--checkpoint", required=True,
                        help="a jaxlm BERT pretraining or fine-tuning run directory")
    parser.add_argument("--out", required=True, help="the directory to write")
    args = parser.parse_args(argv)
    try:
        print(export(args.checkpoint, args.out))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
