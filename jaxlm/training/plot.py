"""Loss and accuracy curves of a run (`metrics.jsonl`) drawn into run_dir/loss.png."""

from __future__ import annotations

import io
from pathlib import Path

from etils import epath

from jaxlm import storage
from jaxlm.training.metrics import read_lines


def read_metrics(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """(train lines, eval lines) of `run_dir/metrics.jsonl`."""
    path = storage.path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a run directory?")
    lines = read_lines(path)
    train = [d for d in lines if "loss" in d]
    evals = [d for d in lines if "eval_loss" in d]
    return train, evals


def objectives(train: list[dict]) -> list[str]:
    """The run's objectives, from its train lines: ["mlm", "nsp"] for BERT, ["lm"] for GPT."""
    keys = train[0] if train else {}
    return [k.removesuffix("_accuracy") for k in keys if k.endswith("_accuracy")]


def plot_run(run_dir: str | Path) -> epath.Path:
    """Draws train/eval loss (left) and each objective's accuracy (right) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = read_metrics(run_dir)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))

    def curve(ax, lines, key, label, **kw):
        points = [(d["step"], d[key]) for d in lines if key in d]
        if points:
            ax.plot(*zip(*points, strict=True), label=label, **kw)

    names = objectives(train)
    total = " + ".join(n.upper() for n in names)
    curve(ax_loss, train, "loss", f"train loss ({total})")
    curve(ax_loss, evals, "eval_loss", f"eval loss ({total})", marker="o")
    if len(names) > 1:
        curve(ax_loss, train, f"{names[0]}_loss", f"train {names[0].upper()} loss", alpha=0.6)
        curve(ax_loss, evals, f"eval_{names[0]}_loss", f"eval {names[0].upper()} loss",
              marker="o")
    for i, name in enumerate(names):
        curve(ax_acc, train, f"{name}_accuracy", f"train {name.upper()} accuracy",
              alpha=1.0 if i == 0 else 0.6)
        curve(ax_acc, evals, f"eval_{name}_accuracy", f"eval {name.upper()} accuracy",
              marker="o")
    ax_loss.set(xlabel="step", ylabel="cross entropy (nats)", title="loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    out, png = storage.path(run_dir) / "loss.png", io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    storage.write_whole(out, png.getvalue())
    return out
