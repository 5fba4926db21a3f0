"""Seq2seq pairs: reading tab-separated files, encoding, preparing, training on them."""

import numpy as np
import pytest

from jaxlm import evaluate, generate, pretrain
from jaxlm.config import ConfigError, load
from jaxlm.data import DataError, pairs, prepare
from jaxlm.data.tokenizer import train_tokenizer
from tests.data_fixtures import TRAINED_IDS, tiny_data_config

WORDS = ["ka", "lo", "mi", "ter", "an", "su", "ven", "ro", "di", "pa"]


def _write(path, n=300, seed=0):
    rows = pairs.reversal_pairs(WORDS, n, seed)
    path.write_text("".join(f"{s}\t{t}\n" for s, t in rows))
    return path


def test_read_pairs_and_name_a_bad_line(tmp_path):
    good = tmp_path / "good.tsv"
    good.write_text("a b\tb a\n\nc\td\n")
    assert pairs.read_pairs([good]) == [("a b", "b a"), ("c", "d")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\nno tab here\n")
    with pytest.raises(DataError, match=r"bad.tsv:2: expected 'source<TAB>target'"):
        pairs.read_pairs([bad])


def test_encode_pads_cuts_and_shifts():
    tokenizer = train_tokenizer(lambda: ["ka lo mi ter an su"] * 20, 40, True)
    ids = {t: tokenizer.token_to_id(t) for t in ("ka", "lo", "mi", "ter")}
    out = pairs.encode(tokenizer, [("ka lo mi", "mi lo ka"), ("ka", "ter ter ter ter")], 4, 4,
                       TRAINED_IDS)
    np.testing.assert_array_equal(out["source_ids"][0], [ids["ka"], ids["lo"], ids["mi"], 0])
    np.testing.assert_array_equal(out["source_mask"], [[1, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(out["target_ids"][0], [ids["mi"], ids["lo"], ids["ka"], 3])
    np.testing.assert_array_equal(out["decoder_input_ids"][0], [2, ids["mi"], ids["lo"],
                                                                ids["ka"]])
    # Cut to 4 with [SEP] counted: the second target loses its [SEP].
    np.testing.assert_array_equal(out["target_ids"][1], [ids["ter"]] * 4)
    np.testing.assert_array_equal(out["target_weights"][1], [1, 1, 1, 1])


def test_prepare_splits_pairs_by_hash(tmp_path):
    cfg = tiny_data_config(tmp_path, train_files=(str(_write(tmp_path / "p.tsv")),),
                           format="pairs", eval_fraction=0.2, max_seq_length=10,
                           max_target_length=10, vocab_size=60)
    prepared = prepare(cfg, seed=0, recipe="span_corruption")
    assert prepared.recipe == "pairs"
    assert prepared.num_train + prepared.num_eval == 300
    assert 30 <= prepared.num_eval <= 90
    assert prepared.row_shapes() == {"decoder_input_ids": (10,), "source_ids": (10,),
                                     "source_mask": (10,), "target_ids": (10,),
                                     "target_weights": (10,)}


def test_pairs_need_the_encoder_decoder():
    with pytest.raises(ConfigError, match="data.format: 'pairs' trains an encoder-decoder"):
        load(None, ["data.format=pairs"])


@pytest.mark.slow  # end to end over 20 s on 2 cores
def test_train_decode_and_score_an_encoder_decoder_on_pairs(tmp_path, capsys):
    data = _write(tmp_path / "p.tsv", n=400)
    summary = pretrain.run(load(pretrain.DEFAULT_CONFIG, [
        f"run_dir={tmp_path / 'run'}", "model.kind=encoder_decoder", f"data.train_files=[{data}]",
        "data.format=pairs", f"data.output_dir={tmp_path / 'prepared'}", "data.vocab_size=60",
        "data.max_seq_length=10", "data.max_target_length=10", "data.eval_fraction=0.1",
        "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64",
        "model.max_position_embeddings=16", "train.steps=30", "train.batch_size=16",
        "train.learning_rate=3e-3", "train.warmup_steps=5", "train.log_every=10",
        "train.eval_every=30", "train.progress_bar=false", "train.tensorboard=false",
        "train.async_checkpoint=false", "mesh.data=8"]))
    assert summary["train"]["lm_loss"] < 3.0  # from about ln(60) = 4.1
    assert 0.0 < summary["eval"]["eval_lm_accuracy"] <= 1.0
    run = str(tmp_path / "run")
    assert generate.main(["--checkpoint", run, "--prompt", "ka lo mi", "--prompt", "su",
                          "--beam-size", "2", "--max-new-tokens", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("ka lo mi >>> ")
    report = evaluate.score_held_out(run, beam_size=2, limit=8)
    assert report["pairs"] == 8 and 0.0 <= report["bleu"] <= 1.0
    assert 0.0 <= report["exact_match"] <= 1.0
