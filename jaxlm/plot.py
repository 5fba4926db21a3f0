"""Loss and accuracy curves of a run: `python -m jaxlm.plot run_dir` writes run_dir/loss.png."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_metrics(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """(train lines, eval lines) of `run_dir/metrics.jsonl`."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a run directory?")
    lines = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    train = [d for d in lines if "loss" in d]
    evals = [d for d in lines if "eval_mlm_accuracy" in d]
    return train, evals


def plot_run(run_dir: str | Path) -> Path:
    """Draws train/eval loss (left) and MLM/NSP accuracy (right) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = read_metrics(run_dir)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))

    def curve(ax, lines, key, label, **kw):
        points = [(d["step"], d[key]) for d in lines if key in d]
        if points:
            ax.plot(*zip(*points, strict=True), label=label, **kw)

    curve(ax_loss, train, "loss", "train loss (MLM + NSP)")
    curve(ax_loss, train, "mlm_loss", "train MLM loss", alpha=0.6)
    curve(ax_loss, evals, "eval_loss", "eval loss (MLM + NSP)", marker="o")
    curve(ax_loss, evals, "eval_mlm_loss", "eval MLM loss", marker="o")
    curve(ax_acc, train, "mlm_accuracy", "train MLM accuracy")
    curve(ax_acc, train, "nsp_accuracy", "train NSP accuracy", alpha=0.6)
    curve(ax_acc, evals, "eval_mlm_accuracy", "eval MLM accuracy", marker="o")
    curve(ax_acc, evals, "eval_nsp_accuracy", "eval NSP accuracy", marker="o")
    ax_loss.set(xlabel="step", ylabel="cross entropy (nats)", title="loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    out = Path(run_dir) / "loss.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m jaxlm.plot RUN_DIR", file=sys.stderr)
        return 2
    print(plot_run(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
