"""The Hugging Face PyTorch references: BERT pretraining (a peer of `benchmarks.pretrain`) and
sentence-classification fine-tuning (run in-process by `benchmarks.finetune`).

    python -m benchmarks.peers.torch BATCH.npz '{"hidden_size": 256, ...}'

serves `python -m benchmarks.pretrain --compare torch` (`common.serve_peer`). torch and
transformers are imported inside the functions: they are optional (the `bench` extra).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import Batch, Measure, hf_bert_config, serve_peer, timer
from jaxlm.config import FinetuneConfig, ModelConfig
from jaxlm.data.classification import label_set


def start_pretraining(cfg: ModelConfig, batch: Batch) -> tuple[Measure, dict]:
    """Hugging Face PyTorch BertForPreTraining + torch AdamW, train mode, eager, on the GPU
    when there is one; under bfloat16 autocast (AMP) when model.dtype is bfloat16."""
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    amp = cfg.dtype == "bfloat16"
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(hf_bert_config(cfg)).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-6,
                            weight_decay=0.01)
    a = batch.arrays
    inputs = dict(input_ids=a["input_ids"], token_type_ids=a["token_type_ids"],
                  attention_mask=a["attention_mask"], labels=batch.labels_BT,
                  next_sentence_label=a["next_sentence_label"])
    inputs = {k: torch.from_numpy(v).long().to(device) for k, v in inputs.items()}

    def one():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def wait(_):
        if device == "cuda":
            torch.cuda.synchronize()

    return timer(one, wait=wait), {"threads": torch.get_num_threads(), "device": device,
                                   "amp": amp}


def finetune(init_from: str, splits, epochs: int, cfg: FinetuneConfig) -> dict:
    """Seconds per epoch and test accuracy of Hugging Face `BertForSequenceClassification`
    fine-tuned from `init_from` with torch's AdamW and `cfg`'s batch size, learning rate,
    warmup and linear decay, each batch padded to its longest sentence (max length 128, as a
    plain `transformers` script does)."""
    import torch
    import transformers

    torch.manual_seed(cfg.train.seed)
    labels = list(label_set(splits["train"]))
    tokenizer = transformers.AutoTokenizer.from_pretrained(init_from)
    model = transformers.BertForSequenceClassification.from_pretrained(
        init_from, num_labels=len(labels))
    B = cfg.train.batch_size
    steps = epochs * (len(splits["train"]) // B)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.learning_rate,
                                  weight_decay=cfg.train.weight_decay, eps=cfg.train.adam_eps)
    schedule = transformers.get_linear_schedule_with_warmup(
        optimizer, round(cfg.finetune.warmup_fraction * steps), steps)

    def batch(examples):
        enc = tokenizer([e.text for e in examples], padding=True, truncation=True,
                        max_length=128, return_tensors="pt")
        return enc, torch.tensor([labels.index(e.label) for e in examples])

    order = np.random.default_rng(cfg.train.seed)
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        train = [splits["train"][i] for i in order.permutation(len(splits["train"]))]
        for s in range(len(train) // B):
            inputs, y = batch(train[s * B:(s + 1) * B])
            loss = model(**inputs, labels=y).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    epoch_s = (time.perf_counter() - started) / epochs
    model.eval()
    hits = 0
    with torch.no_grad():
        for s in range(0, len(splits["test"]), 64):
            inputs, y = batch(splits["test"][s:s + 64])
            hits += int((model(**inputs).logits.argmax(-1) == y).sum())
    return {"epoch_s": epoch_s, "test_accuracy": hits / len(splits["test"])}


if __name__ == "__main__":
    serve_peer(start_pretraining, "python -m benchmarks.peers.torch")
