"""`python -m jaxlm.prepare`: the report it prints, errors, and the recipe of each model kind."""

import json
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import TINY_CORPUS

from jaxlm.prepare import main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY_DATA = [f"data.train_files=['{TINY_CORPUS}']", "data.vocab_size=150",
             "data.max_seq_length=24", "data.max_predictions_per_seq=4", "data.dupe_factor=1",
             "data.num_workers=1"]


def test_command_line(tmp_path, capsys):
    prepared = main([*TINY_DATA, f"data.output_dir={tmp_path}"])
    report = json.loads(capsys.readouterr().out)
    assert report["directory"] == str(prepared.directory)
    assert report["recipe"] == "bert"
    assert report["splits"]["train"]["num_instances"] == prepared.num_train
    assert report["timing"]["instances_per_s"] > 0
    with pytest.raises(SystemExit, match=r"error: .*file not found: .*nope\.txt"):
        main([f"data.train_files=['{tmp_path / 'nope.txt'}']", f"data.output_dir={tmp_path}"])


@pytest.mark.parametrize("config, recipe, keys", [
    ("gpt_tiny.yaml", "causal_lm", {"input_ids", "target_ids"}),
    ("t5_tiny.yaml", "span_corruption", {"source_ids", "source_mask", "decoder_input_ids",
                                         "target_ids", "target_weights"}),
])
def test_the_model_kind_picks_the_recipe(tmp_path, capsys, config, recipe, keys):
    """A GPT or T5 config prepares next-token windows or span corruption, not BERT pairs."""
    prepared = main(["--config", str(CONFIGS / config), *TINY_DATA,
                     f"data.output_dir={tmp_path}"])
    assert json.loads(capsys.readouterr().out)["recipe"] == recipe == prepared.recipe
    stored = {p.stem for p in (prepared.directory / "train").glob("*.npy")}
    assert stored == keys
    assert len(np.load(prepared.directory / "train" / "target_ids.npy")) == prepared.num_train


def test_an_unknown_model_kind_is_named(tmp_path):
    with pytest.raises(SystemExit, match=r"model\.kind: 'bart' is not one of"):
        main([*TINY_DATA, "model.kind=bart", f"data.output_dir={tmp_path}"])
