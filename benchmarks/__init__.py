"""Benchmarks of jaxlm against reference libraries, run from the repo root (outside the wheel).

    python -m benchmarks.pretrain --config configs/bert_mini.yaml --batch-size 32 \\
        --seq-len 128 --steps 20 --compare torch,flax,keras_hub [--keras-python PY]
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.memory \\
        --config configs/bert_large.yaml --batch-size 8 --seq-len 512 --meshes data=8 fsdp=8
    python -m benchmarks.loop --config configs/bert_tiny.yaml
    python -m benchmarks.data --config configs/bert_tiny.yaml
    python -m benchmarks.finetune --init-from path/to/all-MiniLM-L6 --epochs 1

- `pretrain`: one BERT pretraining step, jaxlm against Hugging Face PyTorch and Flax and
  KerasHub on the same synthetic batch, each reference in a process of its own.
- `memory`: XLA's bytes per device of the compiled train step on each mesh.
- `loop`: tokens/s of `train.py`'s loop against the bare step.
- `data`: batches/s of the Grain loader.
- `finetune`: sentence classification, jaxlm against TF-IDF + logistic regression and
  Hugging Face PyTorch.

`common` holds what they share (the synthetic batch, the timer, jaxlm's train step, the
peer-process protocol); `peers` holds one module per reference library. Figures and method:
docs/benchmarks.md.
"""
