"""The loop benchmark compares the real training loop with the bare step."""

import pytest

from benchmarks import loop


@pytest.mark.slow
def test_loop_benchmark_compares_the_real_loop_with_the_bare_step(run_overrides):
    report = loop.loop("configs/bert_tiny.yaml", [*run_overrides, "train.log_every=2"],
                       steps=4)
    assert report["loop_tokens_per_s"] > 0 and report["bare_step_tokens_per_s"] > 0
    assert report["loop/bare"] == pytest.approx(
        report["loop_tokens_per_s"] / report["bare_step_tokens_per_s"])
