"""The Beam preparation (DirectRunner) against the local path: the same instances, byte for byte,
in ArrayRecord shards, locally and in a bucket; the loader over them."""

import dataclasses
import json

import numpy as np
import pytest
from data_fixtures import TINY_CORPUS, read_split, tiny_data_config

from jaxlm import prepare as prepare_cli
from jaxlm.config import ConfigError, DataConfig
from jaxlm.data import builders, make_loader, prepare, records
from jaxlm.data.beam_pipeline import prepare_on_beam
from jaxlm.data.loader import instance_source

ONE_PROCESS = ["--runner", "DirectRunner", "--direct_num_workers=1"]
TWO_PROCESSES = ["--runner", "DirectRunner", "--direct_num_workers=2",
                 "--direct_running_mode=multi_processing"]


def _rows(prepared, split: str) -> dict[str, np.ndarray]:
    """A split's instances stacked per key, read through the loader's source."""
    source = instance_source(prepared, split)
    rows = [source[i] for i in range(len(source))]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _same_instances(local, beam) -> None:
    assert beam.storage_format == "array_record" and local.storage_format == "npy"
    assert beam.directory.name == local.directory.name  # the same settings hash
    for split in ("train", "eval"):
        expected, got = read_split(local, split), _rows(beam, split)
        assert expected.keys() == got.keys()
        for key in expected:
            assert got[key].dtype == expected[key].dtype, key
            assert got[key].tobytes() == expected[key].tobytes(), (split, key)


def test_beam_builds_the_local_instances_byte_for_byte_on_shakespeare(tmp_path):
    """Two worker processes, whole-word masks and a tokenizer trained on a line sample."""
    cfg = DataConfig(output_dir=str(tmp_path / "local"), vocab_size=1000, max_seq_length=64,
                     max_predictions_per_seq=10, dupe_factor=2, whole_word_masking=True,
                     tokenizer_sample_lines=20_000)
    local = prepare(cfg, seed=3)
    beam = prepare_on_beam(dataclasses.replace(cfg, output_dir=str(tmp_path / "beam")), seed=3,
                           recipe="bert", pipeline_args=TWO_PROCESSES)
    _same_instances(local, beam)
    assert len(beam.shards["train"]) > 2  # more than one work item per pass
    assert (beam.num_train_documents, beam.num_eval_documents) == (40, 2)
    assert (beam.directory / "tokenizer.json").read_bytes() == (
        local.directory / "tokenizer.json").read_bytes()


def test_dynamic_masking_stores_train_unmasked_and_masks_in_the_loader(tmp_path):
    cfg = tiny_data_config(tmp_path / "local", dynamic_masking=True)
    local = prepare(cfg, seed=0)
    beam = prepare_on_beam(dataclasses.replace(cfg, output_dir=str(tmp_path / "beam")), seed=0,
                           recipe="bert", pipeline_args=ONE_PROCESS)
    _same_instances(local, beam)
    assert "masked_ids" not in beam.layouts["train"] and "masked_ids" in beam.layouts["eval"]
    batches = [[next(it) for _ in range(3)] for it in (
        iter(make_loader(p, "train", 4, seed=1, shuffle=True, num_epochs=None,
                         process_index=0, process_count=1)) for p in (local, beam))]
    for a, b in zip(*batches, strict=True):
        assert a.keys() == b.keys() and "masked_ids" in a
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_prepared_data_in_a_bucket_from_a_corpus_and_tokenizer_in_the_bucket(bucket, tmp_path,
                                                                              hang_guard):
    from jaxlm import storage

    corpus = f"{bucket}/corpora/tiny.txt"
    storage.copy_file(TINY_CORPUS, corpus)
    trained = prepare(tiny_data_config(tmp_path / "first"), seed=0).directory / "tokenizer.json"
    tokenizer = f"{bucket}/tokenizers/tokenizer.json"
    storage.copy_file(trained, tokenizer)
    cfg = tiny_data_config(tmp_path, train_files=(corpus,), output_dir=f"{bucket}/prepared",
                           tokenizer=tokenizer)
    beam = prepare_on_beam(cfg, seed=0, recipe="bert", pipeline_args=ONE_PROCESS)
    assert str(beam.directory).startswith(f"{bucket}/prepared/corpus-")
    local = prepare(dataclasses.replace(cfg, output_dir=str(tmp_path / "local")), seed=0)
    _same_instances(local, beam)
    # train.py's `prepare` with the same config finds the bucket's data ready.
    assert prepare(cfg, seed=0) == beam


def test_each_process_reads_only_its_own_records(tmp_path, monkeypatch):
    beam = prepare_on_beam(tiny_data_config(tmp_path), seed=0, recipe="bert",
                           pipeline_args=ONE_PROCESS)
    read: list[int] = []
    get = records.RecordSource.__getitem__
    monkeypatch.setattr(records.RecordSource, "__getitem__",
                        lambda self, index: read.append(index) or get(self, index))
    seen = []
    for index in (0, 1):
        read.clear()
        for batch in make_loader(beam, "train", 8, seed=2, shuffle=True, num_epochs=1,
                                 process_index=index, process_count=2):
            assert len(batch["input_ids"]) == 4
        seen.append(set(read))
    assert seen[0] and not seen[0] & seen[1]
    assert len(seen[0]) == len(seen[1]) == beam.num_train // 8 * 4


@pytest.mark.parametrize("recipe", ["causal_lm", "span_corruption"])
def test_beam_builds_the_local_windows_byte_for_byte(tmp_path, monkeypatch, recipe):
    """Work items of 40 tokens: windows cut across work items and documents."""
    monkeypatch.setattr(builders, "_SHARD_TOKENS", 40)
    cfg = tiny_data_config(tmp_path / "local", max_seq_length=8, dupe_factor=1)
    local = prepare(cfg, seed=1, recipe=recipe)
    beam = prepare_on_beam(dataclasses.replace(cfg, output_dir=str(tmp_path / "beam")), seed=1,
                           recipe=recipe, pipeline_args=ONE_PROCESS)
    assert len(beam.shards["train"]) > 3
    assert beam.vocab_size == local.vocab_size
    for split in ("train", "eval"):
        keys = beam.layouts[split]
        expected = {k: np.load(local.directory / split / f"{k}.npy") for k in keys}
        got = _rows(beam, split)
        for key in keys:
            assert got[key].tobytes() == expected[key].tobytes(), (split, key)


def test_record_layout_round_trip():
    arrays = {"input_ids": np.arange(12, dtype=np.uint16).reshape(3, 4),
              "masked_weights": np.linspace(0, 1, 6, dtype=np.float32).reshape(3, 2),
              "next_sentence_label": np.array([0, 1, 0], np.uint8)}
    layout = records.features(arrays)
    assert json.loads(json.dumps(layout)) == layout
    for row in range(3):
        got = records.decode(records.encode(arrays, row), layout)
        for key, a in arrays.items():
            assert got[key].dtype == a.dtype
            np.testing.assert_array_equal(got[key], a[row])
    with pytest.raises(ValueError, match="does not match the layout"):
        records.decode(records.encode(arrays, 0) + b"\0", layout)
    sentences = [[5, 6, 7], [8], [9, 10]]
    tokens, bounds = records.decode_document(records.encode_document(sentences, np.uint16),
                                             np.uint16)
    assert tokens.dtype == np.uint16 and bounds == [0, 3, 4, 6]
    assert [tokens[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)] == sentences


def test_the_command_line_refuses_what_beam_does_not_build(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepare_cli.main(["--direct_num_workers=2", f"data.output_dir={tmp_path}"])
    assert "Beam options need --runner" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="data.format=pairs: the Beam pipeline builds"):
        pairs = tmp_path / "pairs.tsv"
        pairs.write_text("a b\tb a\n")
        prepare_cli.main(["--config", "configs/reverse_tiny.yaml", f"data.train_files=[{pairs}]",
                          f"data.output_dir={tmp_path}", "--runner", "DirectRunner"])
    with pytest.raises(ConfigError, match="tokenizer_sample_lines"):
        DataConfig(tokenizer_sample_lines=-1)
