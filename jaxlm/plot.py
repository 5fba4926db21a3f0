"""`python -m jaxlm.plot RUN_DIR`: loss and accuracy curves of a run into RUN_DIR/loss.png."""

from __future__ import annotations

import sys

from jaxlm.training.plot import plot_run


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m jaxlm.plot RUN_DIR", file=sys.stderr)
        return 2
    print(plot_run(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
