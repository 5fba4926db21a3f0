"""Fine-tuning steps against Hugging Face PyTorch: the same weights, batches and recipe
(AdamW without decay on biases and layer-norm scales, warmup and decay, clipping; dropout
off) give the same losses step after step."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from jaxlm.config import MeshConfig, ModelConfig, TrainConfig
from jaxlm.hf import bert as hf
from jaxlm.models.bert import BertForPreTraining
from jaxlm.objectives.registry import finetuning_task
from jaxlm.training import optim, sharding
from jaxlm.training.state import load_weights, setup_state
from jaxlm.training.step import make_train_step

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

B, T, K, STEPS = 8, 12, 5, 6


def _batch(task: str, seed: int = 0) -> dict:
    """One random batch; question answering's rows have no padding, since there the recipes
    differ at padded positions: transformers never updates the [PAD] embedding
    (`padding_idx`), while jaxlm, as the original BERT, scores padded positions in the
    start/end softmax and so trains it."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, T + 1, B) if task == "token_classification" else np.full(B, T)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    batch = {"input_ids": (rng.integers(5, 99, (B, T)) * mask).astype(np.int32),
             "token_type_ids": np.zeros((B, T), np.int32), "attention_mask": mask,
             "example_weights": np.ones(B, np.float32)}
    if task == "token_classification":
        batch["tag_ids"] = rng.integers(0, K, (B, T)).astype(np.int32)
        batch["tag_weights"] = (mask * (rng.random((B, T)) < 0.7)).astype(np.float32)
    else:
        batch["start_positions"] = rng.integers(0, 4, B).astype(np.int32)
        batch["end_positions"] = (batch["start_positions"] + rng.integers(0, 3, B)).astype(
            np.int32)
    return batch


def _torch_head(task: str, directory, state):
    """The transformers head of `task` with the encoder saved in `directory` and jaxlm's
    initial head weights, dropout off."""
    cls = {"token_classification": transformers.BertForTokenClassification,
           "question_answering": transformers.BertForQuestionAnswering}[task]
    extra = {"num_labels": K} if task == "token_classification" else {}
    model = cls.from_pretrained(directory, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
                                **extra)
    name = "classifier" if task == "token_classification" else "qa_outputs"
    linear = getattr(model, name)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(np.asarray(state.params[name]["kernel"]).T))
        linear.bias.copy_(torch.tensor(np.asarray(state.params[name]["bias"])))
    return model


@pytest.mark.parametrize("task", ["token_classification", "question_answering"])
def test_training_steps_match_transformers(task, tmp_path):
    config = ModelConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                         intermediate_size=37, max_position_embeddings=64, hidden_dropout=0.0,
                         attention_dropout=0.0)
    encoder = BertForPreTraining(config, rngs=nnx.Rngs(0))
    hf.save_pretrained(encoder, config, tmp_path)
    weights = {"bert." + ".".join(map(str, k)): np.asarray(v.get_value())
               for k, v in nnx.to_flat_state(nnx.state(encoder.bert, nnx.Param))}
    train = TrainConfig(steps=STEPS, warmup_steps=2, learning_rate=1e-3)
    mesh = sharding.make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    tx = optim.make_optimizer(train)
    setup = setup_state(config, 0, tx, mesh, finetuning_task(task, K, 0.0), nnx.Param)
    state = setup.init()
    params, _ = load_weights(state.params, setup.shardings.params, weights)
    state = dataclasses.replace(state, params=params)
    step = make_train_step(setup, tx, optim.learning_rate_schedule(train), mesh)

    theirs = _torch_head(task, tmp_path, state).train()
    # jaxlm's recipe in torch: AdamW with BERT's epsilon, no decay on biases and LN scales.
    no_decay = ("bias", "LayerNorm.weight")
    decay = [p for n, p in theirs.named_parameters() if not n.endswith(no_decay)]
    rest = [p for n, p in theirs.named_parameters() if n.endswith(no_decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=train.learning_rate,
                            eps=train.adam_eps)
    schedule = transformers.get_linear_schedule_with_warmup(opt, train.warmup_steps, STEPS)
    ours, reference = [], []
    batch = _batch(task)
    for _ in range(STEPS):  # the same batch: the loss must fall
        state, metrics = step(state, setup.fixed, sharding.global_batch(batch, mesh))
        ours.append(float(metrics["loss"]))
        inputs = {k: torch.tensor(batch[k]).long()
                  for k in ("input_ids", "token_type_ids", "attention_mask")}
        if task == "token_classification":
            labels = {"labels": torch.tensor(np.where(batch["tag_weights"] > 0,
                                                      batch["tag_ids"], -100)).long()}
        else:
            labels = {k: torch.tensor(batch[k]).long()
                      for k in ("start_positions", "end_positions")}
        loss = theirs(**inputs, **labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), train.grad_clip_norm)
        opt.step()
        schedule.step()
        opt.zero_grad()
        reference.append(loss.item())
    np.testing.assert_allclose(ours, reference, rtol=1e-5)
    assert ours[-1] < ours[0]  # it trained
