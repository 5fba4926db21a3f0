"""benchmarks.compression on a tiny fine-tuned run: every variant scored and timed."""

import pytest

from benchmarks import compression


@pytest.mark.slow  # about 50 s on 2 cores
def test_compression_benchmark_scores_every_variant(tiny_classifier):
    rows = compression.compare([str(tiny_classifier)], batch_size=8, rounds=1)
    assert [r["weights"] for r in rows] == ["float32", "int8", "w8a8"]
    assert all(0 <= r["test"]["accuracy"] <= 1 and r["examples_per_s"] > 0 for r in rows)
    assert rows[1]["megabytes"] < 0.4 * rows[0]["megabytes"]  # scales weigh more at width 32
    assert len({r["parameters"] for r in rows}) == 1
