"""The KerasHub peer of `python -m benchmarks.pretrain --compare keras_hub`.

    python benchmarks/peers/keras_hub.py BATCH.npz '{"hidden_size": 256, ..., "warmup": 5}'

Runs as a script on its own, under a Python that has keras-hub and keras (JAX backend) but
not necessarily jaxlm, since KerasHub's tensorflow-text dependency is about 3 GB: imports
nothing from jaxlm or `benchmarks`. Trains KerasHub's `BertMaskedLM` (MLM on the gathered
masked positions, no NSP) with AdamW and global-norm clipping on the benchmark's batch.
Prints one JSON line when compiled and warmed up (or the import error), then for each
number N read from stdin times N steps and prints {"step_s": seconds per `train_on_batch`,
which waits for the loss}; exits at the end of its input.
"""

import json
import os
import sys
import time


def serve(batch_path: str, settings: str) -> None:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
        import keras_hub
        import numpy as np
    except ImportError as e:
        _say({"error": f"{type(e).__name__}: {e}"})
        return
    cfg = json.loads(settings)
    batch = np.load(batch_path)
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=cfg["vocab_size"], num_layers=cfg["num_layers"],
        num_heads=cfg["num_heads"], hidden_dim=cfg["hidden_size"],
        intermediate_dim=cfg["intermediate_size"], dropout=cfg["hidden_dropout"],
        max_sequence_length=cfg["max_position_embeddings"],
        num_segments=cfg["type_vocab_size"])
    model = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.01, beta_1=0.9, beta_2=0.999,
                                         epsilon=1e-6, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[])
    x = {"token_ids": batch["input_ids"], "segment_ids": batch["token_type_ids"],
         "padding_mask": batch["attention_mask"].astype(bool),
         "mask_positions": batch["masked_positions"]}
    y, w = batch["masked_ids"], batch["masked_weights"]
    for _ in range(cfg["warmup"]):
        model.train_on_batch(x, y, sample_weight=w)
    _say({"keras": keras.__version__, "keras_hub": keras_hub.__version__})
    for line in sys.stdin:
        steps = int(line)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y, sample_weight=w)
        _say({"step_s": (time.perf_counter() - start) / steps})


def _say(message: dict) -> None:
    print(json.dumps(message), flush=True)


if __name__ == "__main__":
    # A script's directory leads sys.path; here the torch and flax peers would shadow the
    # real packages, which keras may import.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    serve(sys.argv[1], sys.argv[2])
