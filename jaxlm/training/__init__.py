"""Training, shared by every job: `state` (the train state and its shardings), `step` (the
jitted train and eval steps), `loop` (log, evaluate, checkpoint, stop), `optim` (AdamW and
its schedule), `sharding` (the mesh and the logical-axis rules), `checkpoint` (Orbax),
`metrics` (metrics.jsonl, TensorBoard, MFU), `plot`, `host` (CPU allocator settings)."""
