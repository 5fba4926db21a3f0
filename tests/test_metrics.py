"""Training telemetry: FLOP count, metrics.jsonl lines, TensorBoard files, the plot."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlm.models.bert import BertForPreTraining
from jaxlm.objectives import flops, tasks
from jaxlm.objectives.registry import PRETRAINING
from jaxlm.training import metrics, plot


@pytest.mark.parametrize("widths", [{}, {"layer_heads": (1, 3),
                                         "layer_intermediate": (256, 1024)}])
def test_train_flops_match_xla_cost_analysis(tiny_config, widths):
    """Matmuls dominate a wide model, so XLA's count of the forward pass (which also counts
    elementwise work) is a little above ours / 3; also with layers pruned to other widths."""
    cfg = dataclasses.replace(tiny_config, hidden_size=256, num_heads=4, intermediate_size=1024,
                              vocab_size=1000, hidden_dropout=0.0, attention_dropout=0.0,
                              **widths)
    B, T, P = 4, 64, 10
    model = BertForPreTraining(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    ids = jnp.ones((B, T), jnp.int32)
    positions = jnp.tile(jnp.arange(P, dtype=jnp.int32), (B, 1))

    def forward(state):
        return nnx.merge(graphdef, state)(ids, jnp.zeros_like(ids), jnp.ones_like(ids),
                                          positions)

    cost = jax.jit(forward).lower(state).compile().cost_analysis()
    xla_forward = cost["flops"] if isinstance(cost, dict) else cost[0]["flops"]
    ours_forward = flops.bert_train_flops(cfg, B, T, P) / 3
    assert 1.0 <= xla_forward / ours_forward < 1.1


def test_logger_writes_jsonl_tensorboard_and_plot(tmp_path):
    step_metrics = {"loss": 2.0, "mlm_loss": 1.5, "nsp_loss": 0.5, "mlm_accuracy": 0.25,
                    "nsp_accuracy": 0.5, "learning_rate": 1e-3, "grad_norm": 1.0,
                    "skipped_steps": 0, "bad_streak": 0}
    logger = metrics.MetricsLogger(tmp_path, 0, 4, tokens_per_step=64, flops_per_step=1e6,
                                   peak=1e9, keys=tasks.train_metric_keys(PRETRAINING["bert"]),
                                   progress_bar=False)
    logger.restart_clock(0)
    for step in (1, 2):
        logger.record(step, {**step_metrics, "loss": 2.0 + step})
    line = logger.flush(2)
    logger.write_eval(2, {"eval_loss": 2.5, "eval_mlm_accuracy": 0.3, "eval_nsp_accuracy": 0.6,
                          "eval_perplexity": 4.0})
    logger.close()
    assert line["loss"] == 3.5  # the mean over the logged interval
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert set(lines[0]) == {"step", "loss", "mlm_loss", "nsp_loss", "mlm_accuracy",
                             "nsp_accuracy", "learning_rate", "grad_norm", "tokens_per_s", "mfu",
                             "skipped_steps"}
    np.testing.assert_allclose(lines[0]["mfu"], lines[0]["tokens_per_s"] / 64 * 1e6 / 1e9)
    assert lines[1]["eval_mlm_accuracy"] == 0.3
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    png = plot.plot_run(tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resumed_logger_drops_lines_after_the_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (10, 20, 30)))
    metrics.MetricsLogger(tmp_path, 20, 40, 1, 1.0, 1.0, ("loss",), tensorboard=False,
                          progress_bar=False).close()
    steps = [json.loads(s)["step"] for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20]


def test_log_lines_go_to_the_stderr_of_the_moment(capsys, monkeypatch):
    """jaxlm's handler writes to sys.stderr as it is when a line is logged: a capture or
    redirection that began after the handler was set up gets the line."""
    import logging

    jaxlm_log = logging.getLogger("jaxlm")
    monkeypatch.setattr(jaxlm_log, "handlers", list(jaxlm_log.handlers))
    monkeypatch.setattr(jaxlm_log, "propagate", jaxlm_log.propagate)
    metrics.setup_logging()
    capsys.readouterr()
    jaxlm_log.error("a line for the current stderr")
    assert "a line for the current stderr" in capsys.readouterr().err
