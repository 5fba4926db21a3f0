"""The Hugging Face PyTorch references: BERT pretraining (a peer of `benchmarks.pretrain`),
GPT-2 generation (a peer of `benchmarks.generate`) and fine-tuning of each task head (run
in-process by `benchmarks.finetune`).

    python -m benchmarks.peers.torch BATCH.npz '{"hidden_size": 256, ...}'
    python -m benchmarks.peers.torch generate GPT2_DIRECTORY

serve `python -m benchmarks.pretrain --compare torch` (`common.serve_peer`) and
`python -m benchmarks.generate`. torch and
transformers are imported inside the functions: they are optional (the `bench` extra).
"""

from __future__ import annotations

import copy
import json
import sys
import time

import numpy as np

from benchmarks.common import Batch, Measure, hf_bert_config, serve_peer, timer
from jaxlm.config import FinetuneConfig, ModelConfig
from jaxlm.data.batching import GroupedBatches
from jaxlm.finetuning.common import TaskData
from jaxlm.training import host
from jaxlm.training.loop import EarlyStopping


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


# The transformers class of each fine-tuning task's head.
HEADS = {"sequence_classification": "BertForSequenceClassification",
         "token_classification": "BertForTokenClassification",
         "question_answering": "BertForQuestionAnswering"}


def finetune(init_from: str, data: TaskData, epochs: int, cfg: FinetuneConfig,
             head: dict[str, np.ndarray]) -> dict:
    """The seconds of each epoch (its validation included) and the test scores of the Hugging
    Face head of `cfg.finetune.task` fine-tuned from `init_from` with jaxlm's recipe in torch
    ({"epochs_s", "epoch", "validation", "test"}): the head's linear layer starting
    from `head` ({"kernel" [D, K], "bias" [K]}, jaxlm's draw of the same N(0, 0.02)), AdamW
    without decay on biases and layer-norm scales, `cfg`'s batch size, learning rate, warmup,
    linear decay and clipping, on jaxlm's encoded splits (the same tokens and the same
    length-grouped batches, each padded to its longest row); validation scored after every
    epoch, the best epoch's weights kept and tested, training stopped after
    `finetune.patience` epochs without a better `cfg.metric`, as `jaxlm.finetune` does;
    scored by the same code."""
    import torch
    import transformers

    torch.manual_seed(cfg.train.seed)
    task = cfg.finetune.task
    head_class = getattr(transformers, HEADS[task])
    model = (head_class.from_pretrained(init_from) if task == "question_answering" else
             head_class.from_pretrained(init_from, num_labels=len(data.labels),
                                        classifier_dropout=cfg.finetune.classifier_dropout))
    linear = model.qa_outputs if task == "question_answering" else model.classifier
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(head["kernel"].T.copy()))
        linear.bias.copy_(torch.from_numpy(head["bias"].copy()))
    B = cfg.train.batch_size
    source = GroupedBatches(data.arrays["train"], B, epochs, cfg.train.seed)
    steps = len(source)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [p for n, p in model.named_parameters() if n.endswith(no_decay) == skip],
               "weight_decay": 0.0 if skip else cfg.train.weight_decay} for skip in (False, True)]
    optimizer = torch.optim.AdamW(groups, lr=cfg.train.learning_rate, eps=cfg.train.adam_eps)
    schedule = transformers.get_linear_schedule_with_warmup(
        optimizer, round(cfg.finetune.warmup_fraction * steps), steps)
    stop_early = EarlyStopping(cfg.metric, cfg.finetune.patience, [])
    best: dict = {}

    def targets(batch: dict) -> dict:
        if task == "sequence_classification":
            return {"labels": batch["label"]}
        if task == "token_classification":  # -100: no loss on other sub-words and padding
            return {"labels": np.where(batch["tag_weights"] > 0, batch["tag_ids"], -100)}
        return {"start_positions": batch["start_positions"],
                "end_positions": batch["end_positions"]}

    def inputs(batch: dict) -> dict:
        return {k: torch.from_numpy(np.asarray(batch[k])).long()
                for k in ("input_ids", "token_type_ids", "attention_mask")}

    started = time.perf_counter()
    epoch_ends = []
    for epoch in range(epochs):
        model.train()
        for record in range(epoch * steps // epochs, (epoch + 1) * steps // epochs):
            batch = source[record]
            labels = {k: torch.from_numpy(np.asarray(v)).long()
                      for k, v in targets(batch).items()}
            model(**inputs(batch), **labels).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        model.eval()
        validation = data.score("validation", _outputs(model, data, task, "validation"))
        epoch_ends.append(time.perf_counter())
        if validation[cfg.metric] > stop_early.best:
            best = {"epoch": epoch + 1, "validation": validation,
                    "weights": copy.deepcopy(model.state_dict())}
        if stop_early(validation):
            break
    model.load_state_dict(best.pop("weights"))
    return {"epochs_s": np.diff([started, *epoch_ends]).tolist(), **best,
            "test": data.score("test", _outputs(model, data, task, "test"))}


def _outputs(model, data: TaskData, task: str, split: str, batch_size: int = 64):
    """The model's outputs for every row of `split`, in order, padded back to the arrays'
    length."""
    import torch

    arrays = data.arrays[split]
    N, T = arrays["input_ids"].shape
    parts = []
    with torch.no_grad():
        for first in range(0, N, batch_size):
            rows = slice(first, first + batch_size)
            t = int(arrays["attention_mask"][rows].sum(1).max())
            out = model(**{k: torch.from_numpy(arrays[k][rows, :t]).long()
                           for k in ("input_ids", "token_type_ids", "attention_mask")})
            if task == "question_answering":
                parts.append(tuple(np.pad(x.numpy(), ((0, 0), (0, T - t)),
                                          constant_values=-1e9)
                                   for x in (out.start_logits, out.end_logits)))
            elif task == "token_classification":
                parts.append(np.pad(out.logits.numpy(), ((0, 0), (0, T - t), (0, 0))))
            else:
                parts.append(out.logits.numpy())
    if task == "question_answering":
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(2))
    return np.concatenate(parts)


def serve_generation(directory: str) -> None:
    """The PyTorch side of `benchmarks.generate`: loads the GPT-2 in `directory` and answers
    each JSON line {"prompts": [[id, ...], ...], "new": N} on stdin with {"seconds", "ids"}:
    Hugging Face `generate`, greedy, KV cache on, exactly N new tokens, under
    `torch.inference_mode`, on the GPU when there is one, timed from the prompt ids to the
    generated ids back on the host."""
    import torch
    import transformers

    host.keep_freed_memory()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.GPT2LMHeadModel.from_pretrained(directory).to(device).eval()
    print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__,
                      "transformers": transformers.__version__, "device": device}),
          flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        with torch.inference_mode():
            prompts = torch.tensor(request["prompts"], device=device)
            out = model.generate(prompts, attention_mask=torch.ones_like(prompts),
                                 max_new_tokens=request["new"], min_new_tokens=request["new"],
                                 do_sample=False, use_cache=True, pad_token_id=0)
        ids = out[:, prompts.shape[1]:].tolist()
        print(json.dumps({"seconds": time.perf_counter() - started, "ids": ids}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["generate"]:
        serve_generation(sys.argv[2])
    else:
        serve_peer(start_pretraining, "python -m benchmarks.peers.torch")
