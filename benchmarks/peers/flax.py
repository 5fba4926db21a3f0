"""The Hugging Face Flax reference: a peer of `benchmarks.pretrain --compare flax`.

    python -m benchmarks.peers.flax BATCH.npz '{"hidden_size": 256, ...}'

Trains `FlaxBertForPreTraining` (MLM + NSP) with an optax AdamW step under `jax.jit`. Only
transformers < 5 has it; with a newer one the peer answers the error and the benchmark
reports the reference skipped.
"""

from __future__ import annotations

import jax
import numpy as np
import optax

from benchmarks.common import Batch, Measure, hf_bert_config, serve_peer, timer
from jaxlm.config import ModelConfig


def start_pretraining(cfg: ModelConfig, batch: Batch) -> tuple[Measure, dict]:
    """Hugging Face FlaxBertForPreTraining (transformers < 5) with an optax AdamW step."""
    import transformers

    model = transformers.FlaxBertForPreTraining(hf_bert_config(cfg), seed=0)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01))
    a = batch.arrays
    labels = batch.labels_BT

    def loss_fn(params, key):
        out = model(a["input_ids"], a["attention_mask"], a["token_type_ids"], params=params,
                    dropout_rng=key, train=True)
        logits = out.prediction_logits.astype(np.float32)
        valid = labels >= 0
        xent = optax.softmax_cross_entropy_with_integer_labels(logits, np.maximum(labels, 0))
        mlm = (xent * valid).sum() / valid.sum()
        nsp = optax.softmax_cross_entropy_with_integer_labels(
            out.seq_relationship_logits, a["next_sentence_label"]).mean()
        return mlm + nsp

    @jax.jit
    def step(params, opt_state, key):
        grads = jax.grad(loss_fn)(params, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    holder = {"params": model.params, "opt": tx.init(model.params)}
    key = jax.random.key(0)

    def one():
        holder["params"], holder["opt"] = step(holder["params"], holder["opt"], key)
        jax.block_until_ready(holder["params"])

    return timer(one), {}


if __name__ == "__main__":
    serve_peer(start_pretraining, "python -m benchmarks.peers.flax")
