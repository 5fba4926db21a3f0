"""`python -m jaxlm.prepare --config CONFIG [key.sub=value ...]`: build the tokenizer and the
instances a pretraining config trains on, and print where they went.

The model kind picks the recipe (`jaxlm.objectives.registry`): BERT sentence pairs with
masks, next-token windows for `model.kind=gpt`, span corruption for `encoder_decoder`.
`train.py` with the same config then finds the data ready.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from jaxlm.config import ConfigError, load
from jaxlm.data import DataError, Prepared, prepare
from jaxlm.objectives.registry import pretraining_task


def main(argv: Sequence[str] | None = None) -> Prepared:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.prepare", description=(
        "Build the tokenizer and the pretraining instances of a config."))
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value, e.g. data.dupe_factor=5")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        cfg = load(args.config, args.overrides)
        recipe = pretraining_task(cfg.model.kind).recipe
        prepared = prepare(cfg.data, seed=cfg.train.seed, recipe=recipe)
    except (ConfigError, DataError) as e:
        raise SystemExit(f"error: {e}") from None
    manifest = json.loads((prepared.directory / "manifest.json").read_text())
    print(json.dumps({"directory": str(prepared.directory), "recipe": prepared.recipe,
                      "vocab_size": prepared.vocab_size, "splits": manifest["splits"],
                      "timing": manifest["timing"]}, indent=2))
    return prepared


if __name__ == "__main__":
    main()
