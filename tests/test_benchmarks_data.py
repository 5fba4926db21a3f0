"""benchmarks.data end to end on the tiny corpus: every format, the bucket included."""

from data_fixtures import TINY_CORPUS

from benchmarks import data as data_bench
from jaxlm.config import load


def test_every_format_is_read_and_set_against_the_step(tmp_path, bucket, hang_guard):
    cfg = load(None, [f"data.train_files=[{TINY_CORPUS}]", f"data.output_dir={tmp_path}",
                      "data.vocab_size=200", "data.max_seq_length=32",
                      "data.max_predictions_per_seq=5", "data.num_workers=1",
                      "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
                      "model.intermediate_size=64", "model.max_position_embeddings=32",
                      "train.batch_size=8"])
    report = data_bench.data_throughput(cfg, batch_size=8, batches=2, rounds=1,
                                        bucket=f"{bucket}/bench")
    for name in ("npy", "array_record", "array_record_gcs"):
        assert report[name]["batches_per_s"] > 0 and len(report[name]["rounds"]) == 1
    assert report["train_step_batches_per_s"] > 0
