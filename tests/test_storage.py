"""jaxlm.storage against a real Cloud Storage API (the emulator of `gcs_emulator`)."""

import json
import signal
import time

import data_fixtures
import numpy as np
import pytest
import safetensors.numpy
from test_faults import ARGS, STEPS, TIMING, _lines
from test_pretrain import _run, _train_py

from jaxlm import export, fill_mask, finetune, storage
from jaxlm import prepare as prepare_cli
from jaxlm.config import FinetuneConfig, load

# test_faults' run, without the query-key norm that Hugging Face's BERT lacks (to export it).
RUN = [*ARGS, "model.qk_norm=false"]


def test_write_whole_replaces_an_object_and_a_local_file(bucket, tmp_path):
    for where in (storage.path(f"{bucket}/whole/a.txt"), storage.path(tmp_path / "a.txt")):
        storage.write_whole(where, "one\n")
        storage.write_whole(where, "one\ntwo\n")
        assert where.read_text() == "one\ntwo\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no partial file left


def test_copies_go_both_ways(bucket, tmp_path):
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "events").write_bytes(b"\x00\x01" * 100)
    storage.upload_dir(tmp_path / "up", storage.path(f"{bucket}/copies/tb"))
    assert storage.path(f"{bucket}/copies/tb/events").read_bytes() == b"\x00\x01" * 100
    local = storage.local_copy(f"{bucket}/copies/tb")
    assert (local / "events").read_bytes() == b"\x00\x01" * 100
    storage.copy_file(local / "events", f"{bucket}/copies/one")
    assert storage.local_copy(f"{bucket}/copies/one").read_bytes() == b"\x00\x01" * 100
    assert storage.local_copy(tmp_path / "up") == tmp_path / "up"


def test_a_missing_bucket_is_named_and_nothing_is_created(bucket):
    with pytest.raises(storage.StorageError, match="gs://no-such-bucket does not exist"):
        storage.make_dir("gs://no-such-bucket/run")
    assert not storage.path("gs://no-such-bucket").exists()
    with pytest.raises(FileNotFoundError, match="nothing-here does not exist"):
        storage.local_copy(f"{bucket}/nothing-here")
    assert storage.make_dir(f"{bucket}/run") == storage.path(f"{bucket}/run")


def _bucket_lines(run_dir) -> list[dict]:
    text = storage.path(run_dir).joinpath("metrics.jsonl").read_text()
    return [{k: v for k, v in json.loads(s).items() if k not in TIMING} for s in text.splitlines()]


@pytest.fixture(scope="module")
def bucket_run(bucket, run_overrides, tmp_path_factory):
    """train.py with its run_dir and its data (ArrayRecord shards from the Beam pipeline) in
    the bucket, killed (-9) after step 5 and run again to the end; and the same run,
    uninterrupted, in a local directory on the local path's data."""
    run_dir = f"{bucket}/runs/killed"
    in_bucket = [*run_overrides, f"data.output_dir={bucket}/prepared"]
    prepare_cli.main([*in_bucket, "--runner", "DirectRunner", "--direct_num_workers", "1"])
    proc = _train_py(run_dir, in_bucket, *RUN)
    deadline = time.time() + 180
    while proc.poll() is None and time.time() < deadline:
        metrics = storage.path(run_dir) / "metrics.jsonl"
        if metrics.exists() and any(d["step"] >= 5 for d in _bucket_lines(run_dir)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    killed_output = proc.communicate()[0]
    final = _train_py(run_dir, in_bucket, *RUN)
    output = final.communicate(timeout=300)[0]
    assert final.returncode == 0, killed_output + output
    local = tmp_path_factory.mktemp("local")
    _run(run_overrides, local, *RUN)
    return run_dir, local, output


@pytest.mark.slow
def test_a_killed_run_in_a_bucket_resumes_bit_for_bit(bucket_run):
    run_dir, local, output = bucket_run
    assert "resuming at step" in output
    assert "using prepared data in gs://jaxlm-test/prepared/corpus-" in output
    assert _bucket_lines(run_dir) == _lines(local)
    files = {p.name for p in storage.path(run_dir).iterdir()}
    assert {"metrics.jsonl", "tokenizer.json", "loss.png", "checkpoints"} <= files
    assert not any(storage.path(run_dir).glob("gs:*"))  # no local stand-in directory


@pytest.mark.slow
def test_a_run_in_a_bucket_serves_fill_mask_export_and_fine_tuning(bucket, bucket_run,
                                                                     tmp_path, capsys):
    run_dir, local, _ = bucket_run
    texts = ["ka lo [MASK] ter an su ."]
    assert fill_mask.main(["--checkpoint", run_dir, *texts]) == 0
    assert fill_mask.main(["--checkpoint", str(local), *texts]) == 0
    from_bucket, from_disk = capsys.readouterr().out.split(texts[0])[1:]
    assert from_bucket == from_disk  # the same weights, read from either place

    exported = export.export(run_dir, tmp_path / "hf")
    reference = export.export(local, tmp_path / "hf_local")
    theirs, ours = (safetensors.numpy.load_file(d / "model.safetensors")
                    for d in (exported, reference))
    assert theirs.keys() == ours.keys()
    assert all(np.array_equal(theirs[k], ours[k]) for k in ours)

    root = tmp_path / "data"
    root.mkdir()
    data_fixtures.separable_polarity(root / "separable.csv", per_class=20)
    classifier = f"{bucket}/runs/classifier"
    cfg = load(None, data_fixtures.separable_overrides(
        root, classifier, f"init_from={run_dir}", "finetune.epochs=1",
        "data.max_seq_length=32"), cls=FinetuneConfig)
    results = finetune.run(cfg)
    saved = json.loads(storage.path(classifier).joinpath("results.json").read_text())
    assert saved["test"] == results["test"]
    assert saved["best_step"] == results["best_step"]


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_in_a_bucket_is_set_aside(bucket_run, run_overrides):
    run_dir, _, _ = bucket_run
    state = storage.path(run_dir) / "checkpoints" / str(STEPS) / "state"
    # Every file of array bytes (some are superseded OCDBT nodes that no read touches).
    for damaged in [*state.glob("d/*"), *state.glob("*/d/*")]:
        data = bytearray(damaged.read_bytes())
        data[len(data) // 2: len(data) // 2 + 16] = bytes(16)
        damaged.write_bytes(bytes(data))
    before = _bucket_lines(run_dir)
    _run(run_overrides, run_dir, *RUN[1:], f"train.steps={STEPS + 2}")
    aside = list((storage.path(run_dir) / "corrupt_checkpoints").iterdir())
    assert [p.name.split("-")[0] for p in aside] == [str(STEPS)]
    after = _bucket_lines(run_dir)
    assert after[:STEPS - 2] == before[:STEPS - 2]  # resumed from the checkpoint before
    assert [d["step"] for d in after] == list(range(1, STEPS + 3))
