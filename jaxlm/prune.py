"""Pruning a fine-tuned BERT while training it further: `python -m jaxlm.prune`.

    python -m jaxlm.prune init_from=runs/classify prune.heads=0.5 run_dir=runs/classify_heads
    python -m jaxlm.prune init_from=runs/classify prune.heads=0.3 prune.neurons=0.3
    python -m jaxlm.prune init_from=path/to/bert prune.sparsity=0.9 finetune.epochs=3

Fine-tuning (`jaxlm.finetune`: the same config, data, loop, checkpoints and results) with
pruning (`jaxlm.compression.prune`); the default config is configs/prune_classify.yaml.
`prune.heads` / `prune.neurons` remove that fraction of the attention heads / MLP neurons of
`init_from` (a model fine-tuned for the task: a jaxlm run or a Hugging Face head) by their
importance on the validation split, before training; results.json then also holds the
pruned model's scores before training and its heads and width per layer. `prune.sparsity`
zeroes that fraction of every encoder weight matrix by magnitude, gradually between
`prune.begin` and `prune.end` (fractions of the steps); results.json holds the sparsity per
matrix. The result loads in `jaxlm.classify`, `tag`, `answer`, `quantize` and `export`
(a structurally pruned model exports at full width, with zero heads and neurons).
"""

import sys

from jaxlm import finetune

if __name__ == "__main__":
    sys.exit(finetune.main(command="prune"))
