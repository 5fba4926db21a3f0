"""Generation: sampling filters, cached decoding against recomputation, the command line."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlm import generate as generate_cli
from jaxlm import pretrain
from jaxlm.config import load
from jaxlm.inference import generate as gen
from jaxlm.models.gpt import GPTLanguageModel


@pytest.fixture
def model(tiny_config):
    config = dataclasses.replace(tiny_config, kind="gpt", activation="gelu_tanh",
                                 hidden_dropout=0.0, attention_dropout=0.0)
    m = GPTLanguageModel(config, rngs=nnx.Rngs(params=3, dropout=3))
    m.eval()
    return m


def test_top_k_keeps_the_k_largest():
    logits = jnp.array([[1.0, 4.0, 3.0, 2.0]])
    out = np.asarray(gen.filter_logits(logits, top_k=2, top_p=1.0))
    np.testing.assert_array_equal(out, [[-np.inf, 4.0, 3.0, -np.inf]])


@pytest.mark.parametrize("p, kept", [(0.5, 1), (0.8, 2), (0.81, 3), (1.0, 4)])
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
    probs = np.array([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5 0.3 0.15 0.05
    out = np.asarray(gen.filter_logits(jnp.log(jnp.asarray(probs))[None], 0, p))[0]
    expected = {1: [1], 2: [1, 3], 3: [0, 1, 3], 4: [0, 1, 2, 3]}[kept]
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(out)), expected)


def test_greedy_equals_recomputing_the_whole_sequence(model):
    """Cached, batched, left-padded greedy decoding picks the same tokens as calling the
    model on each prompt alone, without a cache, after every token."""
    prompts = [[5, 9, 13, 2, 7], [11, 3]]
    out = gen.generate(model, prompts, 4)
    forward = nnx.jit(lambda m, ids: m(ids))
    for prompt, tokens in zip(prompts, out, strict=True):
        seq = list(prompt)
        for _ in range(4):
            seq.append(int(jnp.argmax(forward(model, jnp.asarray([seq]))[0, -1])))
        assert tokens == seq[len(prompt):]


def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    prompts = [[5, 9, 13]]
    hot = gen.Sampling(temperature=1.5)
    assert gen.generate(model, prompts, 8, sampling=hot, seed=1) == gen.generate(
        model, prompts, 8, sampling=hot, seed=1)
    draws = {tuple(gen.generate(model, prompts, 8, sampling=hot, seed=s)[0]) for s in range(4)}
    assert len(draws) > 1
    top1 = gen.Sampling(temperature=1.0, top_k=1)
    assert gen.generate(model, prompts, 8, sampling=top1, seed=5) == gen.generate(
        model, prompts, 8)


def test_stop_token_ends_a_row(model):
    hot = gen.Sampling(temperature=3.0)
    first = gen.generate(model, [[5, 9, 13]], 8, sampling=hot)[0]
    j = next(j for j in range(1, 8) if first[j] not in first[:j])
    assert gen.generate(model, [[5, 9, 13]], 8, sampling=hot, stop_id=first[j]) == [first[:j]]


def test_sentinels_decode_as_extra_ids():
    from jaxlm.data.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(lambda: ["ka lo mi"] * 10, 30, True)
    V = tokenizer.get_vocab_size()
    ka, lo = tokenizer.token_to_id("ka"), tokenizer.token_to_id("lo")
    assert gen.decode_text(tokenizer, [V, ka, lo, V + 1]) == "<extra_id_0> ka lo <extra_id_1>"
    assert gen.encode_text(tokenizer, "<extra_id_0> ka lo <extra_id_1>") == [V, ka, lo, V + 1]


def test_bad_requests_are_clear_errors(model):
    with pytest.raises(ValueError, match="more than the model's context of 64"):
        gen.generate(model, [[1] * 60], 5)
    with pytest.raises(ValueError, match="more than the model's context of 64"):
        gen.generate(model, [[1] * 70], 1)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        gen.Sampling(top_p=0.0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        gen.Sampling(top_p=1.5)
    with pytest.raises(ValueError, match="at least one token"):
        gen.generate(model, [[]], 3)
    with pytest.raises(ValueError, match="top_k=500 exceeds the vocabulary of 99 tokens"):
        gen.generate(model, [[1, 2]], 3, sampling=gen.Sampling(temperature=1.0, top_k=500))


@pytest.mark.slow  # end to end over 20 s on 2 cores
def test_command_line_continues_a_trained_checkpoint(run_overrides, tmp_path, capsys):
    run_dir = tmp_path / "gpt"
    pretrain.run(load(pretrain.DEFAULT_CONFIG, [
        *run_overrides, f"run_dir={run_dir}", "model.kind=gpt", "model.activation=gelu_tanh"]))
    argv = ["--checkpoint", str(run_dir), "--prompt", "ka lo mi", "--prompt", "su",
            "--max-new-tokens", "5", "--temperature", "0.7", "--top-k", "10", "--top-p", "0.9"]
    assert generate_cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("ka lo mi >>> ")
    assert generate_cli.main([*argv[:6], "--max-new-tokens", "40"]) == 1
    assert "context of 32" in capsys.readouterr().err
    assert generate_cli.main([*argv[:6], "--top-p", "0"]) == 1
    assert generate_cli.main(["--checkpoint", str(tmp_path / "nothing"), "--prompt", "x"]) == 1
    assert "no checkpoint found" in capsys.readouterr().err
    jax.clear_caches()
