"""`python -m jaxlm.prepare --config CONFIG [key.sub=value ...] [--runner RUNNER ...]`: build the
tokenizer and the instances a pretraining config trains on, and print where they went.

The model kind picks the recipe (`jaxlm.objectives.registry`): BERT sentence pairs with
masks, next-token windows for `model.kind=gpt`, span corruption for `encoder_decoder`.
`train.py` with the same config then finds the data ready.

With `--runner` (e.g. DirectRunner, DataflowRunner) the data is built by an Apache Beam
pipeline into ArrayRecord shards (`jaxlm.data.beam_pipeline`, `pip install 'jaxlm[beam]'`),
the same instances as without it; every other `--option` goes to Beam, e.g.
`--direct_num_workers 2 --direct_running_mode multi_processing`.
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

OWN_OPTIONS = ("--config", "--runner", "--help")


def _split_beam_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """(this command's arguments, Beam's options): every `--option` not in OWN_OPTIONS goes
    to Beam with its value, given as `--option=value` or as the next argument (an argument
    without "=" that does not start with "--": overrides always hold "=")."""
    ours, beam, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        takes_value = (arg.startswith("--") and "=" not in arg and i + 1 < len(argv)
                       and "=" not in argv[i + 1] and not argv[i + 1].startswith("--"))
        mine = not arg.startswith("--") or arg.split("=")[0] in OWN_OPTIONS
        (ours if mine else beam).extend(argv[i:i + 1 + takes_value])
        i += 1 + takes_value
    return ours, beam


def main(argv: Sequence[str] | None = None) -> Prepared:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.prepare", description=(
        "Build the tokenizer and the pretraining instances of a config."))
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument("--runner", help="Apache Beam runner (DirectRunner, DataflowRunner, "
                        "...); default: processes on this machine, without Beam")
    parser.add_argument("overrides", nargs="*", help="key.sub=value, e.g. data.dupe_factor=5")
    ours, beam_args = _split_beam_options(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(ours)
    if beam_args and not args.runner:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)} (Beam options need "
                     f"--runner)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        cfg = load(args.config, args.overrides)
        recipe = pretraining_task(cfg.model.kind).recipe
        if args.runner:
            try:  # Beam, the optional `beam` extra, is imported only for a pipeline
                from jaxlm.data import beam_pipeline
            except ModuleNotFoundError as e:
                if e.name.split(".")[0] != "apache_beam":
                    raise
                raise SystemExit("error: --runner needs Apache Beam; install it with "
                                 "pip install 'jaxlm[beam]'") from None
            prepared = beam_pipeline.prepare_on_beam(cfg.data, seed=cfg.train.seed, recipe=recipe,
                                       pipeline_args=["--runner", args.runner, *beam_args])
        else:
            prepared = prepare(cfg.data, seed=cfg.train.seed, recipe=recipe)
    except (ConfigError, DataError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    manifest = json.loads((prepared.directory / "manifest.json").read_text())
    print(json.dumps({"directory": str(prepared.directory), "recipe": prepared.recipe,
                      "vocab_size": prepared.vocab_size, "splits": {
                          split: {k: v for k, v in counts.items() if k not in ("shards",
                                                                                 "features")}
                          for split, counts in manifest["splits"].items()},
                      "timing": manifest["timing"]}, indent=2))
    return prepared


if __name__ == "__main__":
    main()
