"""Training telemetry: a progress bar, `metrics.jsonl`, TensorBoard, tokens/s and MFU.

`run_dir/metrics.jsonl` holds one JSON object per line. Train lines (every `log_every`
steps) have exactly, for BERT (objectives mlm and nsp; GPT has the one objective lm)

    step loss mlm_loss nsp_loss mlm_accuracy nsp_accuracy learning_rate grad_norm
    tokens_per_s mfu skipped_steps

where the losses and accuracies are averaged over the steps since the previous line, and
eval lines have `step`, `eval_loss`, `eval_mlm_loss`, `eval_nsp_loss`,
`eval_mlm_accuracy`, `eval_nsp_accuracy` and `eval_perplexity` (exp of the MLM loss;
for GPT `eval_lm_loss`, `eval_lm_accuracy` and the perplexity of the next token).

MFU (model FLOPs utilization, PaLM appendix B) = the model's FLOPs per second / the
hardware's peak. Model FLOPs count the matmuls only, forward plus backward = 3 x forward,
as `tasks.bert_train_flops` and `tasks.gpt_train_flops` derive. The peak comes from
`PEAK_FLOPS` (datasheet dense bf16 per chip) for GPUs/TPUs; a CPU has no datasheet
number that XLA can reach, so its peak is measured once at start-up: the best float32
FLOP/s of a 1024x1024 matmul on this host (`measure_cpu_peak`). All local CPU "devices"
share the host's cores, so the peak is per host, not per device.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import storage

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s per device from vendor datasheets, by `device.device_kind` prefix.
PEAK_FLOPS = {
    "NVIDIA H200": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA A100": 312e12,
    "NVIDIA L4": 121e12,
    "TPU v6": 918e12,
    "TPU v5p": 459e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v4": 275e12,
}


def measure_cpu_peak(size: int = 1024, repeats: int = 5) -> float:
    """Best float32 matmul FLOP/s on this host's first device (the CPU peak for MFU)."""
    x = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    matmul(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        matmul(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best


def peak_flops() -> float:
    """Peak FLOP/s of all devices of this job (see the module docstring)."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return measure_cpu_peak() * jax.process_count()
    for prefix, flops in PEAK_FLOPS.items():
        if device.device_kind.startswith(prefix):
            return flops * jax.device_count()
    return float("nan")


@jax.jit
def _stack_metrics(per_step: list[dict]) -> dict:
    """An interval's step metrics as one [steps] array per key: one program and a few
    transfers, where fetching every scalar took about 2.5 ms each on a busy 2-core CPU
    (a second per 50-step line, docs/benchmarks.md)."""
    return jax.tree.map(lambda *values: jnp.stack(values), *per_step)


class MetricsLogger:
    """Writes metrics lines, TensorBoard scalars and the progress bar (process 0 only).

    Args:
      run_dir: the run's output directory.
      start_step: the step training starts from; lines after it (from a run that was cut
        off after its last checkpoint) are dropped, so the file reads like one run. A run
        that starts from step 0 in a directory with metrics (its checkpoints deleted) moves
        the earlier metrics.jsonl and TensorBoard files aside instead.
      total_steps: the run's last step, for the progress bar's ETA.
      tokens_per_step: sequence positions processed per step (batch x length).
      flops_per_step, peak: for MFU.
      keys: the step metrics averaged into each line (`tasks.train_metric_keys`).

    metrics.jsonl is rewritten whole at each line (`storage.write_whole`), since a bucket has
    no append; TensorBoard's event files for a run_dir in a bucket are written to a local
    temporary directory and uploaded at each line.
    """

    def __init__(self, run_dir: str | Path, start_step: int, total_steps: int,
                 tokens_per_step: int, flops_per_step: float, peak: float,
                 keys: tuple[str, ...], tensorboard: bool = True, progress_bar: bool = True):
        self.active = jax.process_index() == 0
        self.keys = keys
        self.tokens_per_step, self.flops_per_step, self.peak = (
            tokens_per_step, flops_per_step, peak)
        self.pending: list[tuple[int, dict]] = []
        self.due: tuple[int, dict] | None = None  # a closed interval, not yet written
        self.last_time, self.last_step = None, start_step
        self.bar = self.writer = self.staging = None
        if not self.active:
            return
        run_dir = storage.path(run_dir)
        self.path = run_dir / "metrics.jsonl"
        lines = read_lines(self.path) if self.path.exists() else []
        if lines and not start_step:
            _set_aside_history(run_dir)
            lines = []
        self.text = "".join(json.dumps(line) + "\n" for line in lines
                            if line["step"] <= start_step)
        if lines:
            storage.write_whole(self.path, self.text)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tensorboard = run_dir / "tensorboard"
            if storage.is_url(run_dir):
                self.staging = tempfile.TemporaryDirectory(prefix="jaxlm-tensorboard-")
            self.writer = SummaryWriter(
                self.staging.name if self.staging else str(self.tensorboard),
                purge_step=start_step + 1 if start_step else None)
        if progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step",
                            dynamic_ncols=True)

    def restart_clock(self, step: int) -> None:
        """Starts a throughput interval (after compilation, evaluation or a checkpoint)."""
        self.last_time, self.last_step = time.perf_counter(), step

    def record(self, step: int, metrics: dict) -> None:
        """Keeps one step's device metrics without waiting for them."""
        self.pending.append((step, metrics))
        if self.bar is not None:
            self.bar.update(1)

    def end_interval(self, step: int) -> None:
        """Closes the interval of steps up to `step`, without waiting for them: its line is
        written by `write_due`, once the next step is queued."""
        self.due, self.pending = (step, _stack_metrics([m for _, m in self.pending])), []

    def write_due(self) -> dict | None:
        """Fetches the closed interval's metrics (one host sync, which waits for its last
        step) and writes their average; None when no interval is due."""
        if self.due is None:
            return None
        (step, stacked), self.due = self.due, None
        fetched = jax.device_get(stacked)
        now = time.perf_counter()
        line = {"step": step}
        for key in self.keys:
            line[key] = float(np.mean(fetched[key]))
        line["learning_rate"] = float(fetched["learning_rate"][-1])
        line["skipped_steps"] = int(fetched["skipped_steps"][-1])
        line["bad_streak"] = int(fetched["bad_streak"][-1])
        seconds = now - self.last_time if self.last_time is not None else float("nan")
        steps = step - self.last_step
        line["tokens_per_s"] = self.tokens_per_step * steps / seconds if steps > 0 else 0.0
        line["mfu"] = self.flops_per_step * steps / seconds / self.peak if steps > 0 else 0.0
        self.restart_clock(step)
        streak = line.pop("bad_streak")
        self._write(line, "train")
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{line['loss']:.3f}",
                                 tok_s=f"{line['tokens_per_s']:.0f}", refresh=False)
        line["bad_streak"] = streak
        return line

    def flush(self, step: int) -> dict:
        """Closes the interval up to `step` and writes its line now."""
        self.end_interval(step)
        return self.write_due()

    def write_eval(self, step: int, metrics: dict) -> None:
        self._write({"step": step, **metrics}, "eval")
        if self.bar is not None:
            self.bar.write(f"step {step}: " + " ".join(
                f"{k}={v:.4f}" for k, v in metrics.items()))

    def _write(self, line: dict, group: str) -> None:
        if not self.active:
            return
        self.text += json.dumps(line) + "\n"
        storage.write_whole(self.path, self.text)
        if self.writer is not None:
            for k, v in line.items():
                if k != "step":
                    self.writer.add_scalar(f"{group}/{k.removeprefix('eval_')}", v, line["step"])
            if self.staging is not None:
                self.writer.flush()
                storage.upload_dir(Path(self.staging.name), self.tensorboard)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.staging is not None:
            storage.upload_dir(Path(self.staging.name), self.tensorboard)
            self.staging.cleanup()


class MetricsFileError(RuntimeError):
    """A metrics.jsonl line that is not JSON, other than a torn last line."""


def read_lines(path) -> list[dict]:
    """The lines of a metrics.jsonl. A torn last line (a run killed while writing it) is
    dropped with a warning, since the steps after the last checkpoint are run again.

    Raises:
      MetricsFileError: a damaged line before the last, naming the file and line.
    """
    texts = [s for s in path.read_text().splitlines() if s.strip()]
    lines = []
    for number, text in enumerate(texts, 1):
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError as e:
            if number < len(texts):
                raise MetricsFileError(f"{path}:{number}: not a JSON line ({e}); repair or "
                                       f"remove the line") from None
            log.warning("%s:%d: dropping a torn last line (%r)", path, number, text[:80])
    return lines


def _set_aside_history(run_dir) -> None:
    """Moves metrics.jsonl and tensorboard/ of an earlier run to names with a time stamp."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir / f"metrics-{stamp}.jsonl"
    for n in range(1, 1000):
        if not target.exists():
            break
        target = run_dir / f"metrics-{stamp}-{n}.jsonl"
    (run_dir / "metrics.jsonl").rename(target)
    if (run_dir / "tensorboard").is_dir():
        storage.move_dir(run_dir / "tensorboard",
                         run_dir / target.stem.replace("metrics", "tensorboard"))
    log.warning("%s holds the metrics of an earlier run but no checkpoint to resume: this run "
                "starts at step 0, and the earlier metrics are kept in %s", run_dir, target)


def eval_history(run_dir, start: int) -> list[dict]:
    """The eval lines of `run_dir/metrics.jsonl` up to step `start` (a resumed run's past)."""
    path = storage.path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [d for d in read_lines(path) if "eval_loss" in d and d["step"] <= start]


class StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever sys.stderr is when a line is written, so that a later
    redirection (a notebook's, a test's capture) gets the lines, not a closed stream."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def setup_logging() -> None:
    """INFO lines with a time stamp from the "jaxlm" loggers, on stderr."""
    # jaxlm's own handler: absl (imported by orbax) has already claimed the root logger.
    root = logging.getLogger("jaxlm")
    if root.handlers:
        return
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    logging.getLogger("absl").addFilter(_first_line_only)
    ignore_closed_loop_callbacks()


def ignore_closed_loop_callbacks() -> None:
    """Silences the callbacks that reach Orbax's closed event loop after a failed read or
    write of a checkpoint (an "Event loop is closed" traceback or an unretrieved future's
    error each, hundreds per checkpoint); jaxlm reports the failure itself."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError)
                and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    sys.unraisablehook = hook
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _first_line_only(record: logging.LogRecord) -> bool:
    """Keeps the first line of a library's log record, without its traceback: Orbax logs a
    failed background save once per thread; jaxlm reports the failure itself in one line."""
    record.msg, record.args = (record.getMessage().splitlines() or [""])[0][:300], ()
    record.exc_info = record.exc_text = record.stack_info = None
    return True
