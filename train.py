"""Pretrain BERT: `python train.py [--config configs/bert_tiny.yaml] [key.sub=value ...]`.

With no arguments: the tiny BERT on the complete works of Shakespeare, a few minutes on a
laptop CPU. Everything lands in `run_dir` (checkpoints, metrics.jsonl, TensorBoard,
loss.png); running the same command again resumes from the newest checkpoint.
"""

import sys

from jaxlm.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
