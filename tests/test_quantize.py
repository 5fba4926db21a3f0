"""int8 quantization: rounding and products against numpy, whole models against their float
selves, and `python -m jaxlm.quantize` from a run to the inference commands."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_pretrain import _run

from jaxlm import classify as classify_cli
from jaxlm import fill_mask as fill_mask_cli
from jaxlm import quantize as quantize_cli
from jaxlm.compression import quantize
from jaxlm.data import load_tokenizer
from jaxlm.inference import classify
from jaxlm.inference.fill_mask import fill_mask
from jaxlm.inference.load import load_finetuned, load_masked_lm, load_quantized
from jaxlm.models.bert import BertForSequenceClassification
from jaxlm.models.gpt import GPTLanguageModel
from jaxlm.nn.layers import Embedding, Linear


def _np_quantize(w):
    """Symmetric int8 per column, the reference: (q, scale)."""
    scale = np.abs(w).max(0) / 127
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale


def test_quantize_int8_matches_numpy_and_bounds_the_error():
    w = np.random.default_rng(0).normal(size=(64, 24)).astype(np.float32)
    w[:, 3] = 0.0  # an all-zero column
    q, scale = quantize.quantize_int8(jnp.asarray(w))
    q_ref, scale_ref = _np_quantize(w.astype(np.float64))
    assert q.dtype == jnp.int8 and np.abs(np.asarray(q)).max() == 127
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_allclose(scale, scale_ref, rtol=1e-6)
    assert np.all(np.abs(np.asarray(q) * np.asarray(scale) - w) <= np.asarray(scale) / 2 + 1e-7)


@pytest.mark.parametrize("activations", [False, True])
def test_int8_matmul_matches_numpy(activations):
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(5, 64)).astype(np.float32), rng.normal(size=(64, 24)).astype(np.float32)
    q, scale = _np_quantize(w.astype(np.float64))
    if activations:  # each row of x to int8 with its own scale, integer product
        xq_T, x_scale = _np_quantize(x.T.astype(np.float64))
        expected = (xq_T.T.astype(np.int64) @ q.astype(np.int64)) * x_scale[:, None] * scale
    else:
        expected = x.astype(np.float64) @ (q * scale)
    got = quantize.int8_matmul(jnp.asarray(x), jnp.asarray(q), jnp.asarray(scale, jnp.float32),
                               activations)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected - x @ w).max() < 0.1 * np.abs(x @ w).max()  # close to float


@pytest.mark.parametrize("activations", [False, True])
def test_a_quantized_classifier_stays_close_to_its_float_self(tiny_config, activations):
    config = dataclasses.replace(tiny_config, lora_rank=4)
    model = BertForSequenceClassification(config, 3, classifier_dropout=0.1, rngs=nnx.Rngs(0))
    for _, module in nnx.iter_modules(model):  # LoRA updates that are not zero
        if isinstance(module, Linear) and module.lora is not None:
            module.lora.b.set_value(np.full(module.lora.b.shape, 0.01, np.float32))
    model.eval()
    rng = np.random.default_rng(2)
    ids = rng.integers(5, config.vocab_size, (4, 16)).astype(np.int32)
    inputs = (ids, np.zeros_like(ids), np.ones_like(ids))
    before = np.asarray(model(*inputs))
    quantize.quantize(model, activations)
    assert not any(isinstance(m, (Linear, Embedding)) for _, m in nnx.iter_modules(model))
    after = np.asarray(model(*inputs))
    assert np.abs(after - before).max() < 0.02 * np.abs(before).max() + 1e-3
    saved = quantize.arrays(model)
    assert saved["bert.layers.0.attention.query.kernel"].dtype == np.int8
    assert saved["bert.embeddings.word_embeddings.embedding"].dtype == np.int8
    assert not any("lora" in name for name in saved)  # merged into the int8 kernels


def test_a_quantized_gpt_attends_through_its_int8_table(tiny_config):
    config = dataclasses.replace(tiny_config, kind="gpt", layer_norm_eps=1e-5,
                                 activation="gelu_tanh")
    model = GPTLanguageModel(config, rngs=nnx.Rngs(0))
    model.eval()
    ids = np.random.default_rng(3).integers(0, config.vocab_size, (2, 12)).astype(np.int32)
    before = np.asarray(model(ids))
    quantize.quantize(model)
    after = np.asarray(model(ids))
    assert np.abs(after - before).max() < 0.02 * np.abs(before).max() + 1e-3
    assert (after.argmax(-1) == before.argmax(-1)).mean() > 0.9


@pytest.fixture(scope="module")
def bert_run(run_overrides, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bert_run")
    _run(run_overrides, run_dir, "train.steps=3")
    return run_dir


@pytest.mark.parametrize("activations", [False, True])
def test_quantize_command_to_fill_mask(bert_run, tmp_path, capsys, activations):
    out = tmp_path / "int8"
    flags = ["--activations"] if activations else []
    assert quantize_cli.main(["--checkpoint", str(bert_run), "--out", str(out), *flags]) == 0
    assert json.loads((out / "quantized.json").read_text())["mode"] == (
        "w8a8" if activations else "int8")
    float_model, tokenizer = load_masked_lm(bert_run)
    float32_bytes = 4 * sum(v.size for v in jax_arrays(float_model))
    # About a quarter, plus the float32 scales, biases and norms, which weigh more at width 32.
    assert (out / "model.safetensors").stat().st_size < 0.4 * float32_bytes

    int8_model, _ = load_masked_lm(out)
    text = ["the [MASK] of the word"]
    ours, theirs = fill_mask(int8_model, tokenizer, text)[0][0], fill_mask(float_model,
                                                                          tokenizer, text)[0][0]
    assert abs(ours[0][1] - dict(theirs).get(ours[0][0], 0.0)) < 0.05
    capsys.readouterr()
    assert fill_mask_cli.main(["--checkpoint", str(out), *text]) == 0
    assert ours[0][0] in capsys.readouterr().out

    # Never over existing files; a fine-tuning command refuses a pretrained model.
    assert quantize_cli.main(["--checkpoint", str(bert_run), "--out", str(out)]) == 1
    assert "exists and is not an empty directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds a pretrained model"):
        load_quantized(out, finetuned=True)


def test_a_damaged_quantized_model_is_named(bert_run, tmp_path):
    out = tmp_path / "int8"
    assert quantize_cli.main(["--checkpoint", str(bert_run), "--out", str(out)]) == 0
    data = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{out}: unreadable quantized model"):
        load_masked_lm(out)
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        load_masked_lm(out)


def jax_arrays(model):
    return [v.get_value() for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))]


def test_a_quantized_classifier_serves_through_classify(tiny_classifier, tmp_path, capsys):
    run_dir = tiny_classifier
    out = tmp_path / "int8"
    assert quantize_cli.main(["--checkpoint", str(run_dir), "--out", str(out)]) == 0
    module, labels, _, cfg = load_finetuned(out)
    assert labels == ("negative", "positive") and cfg.finetune.task == "sequence_classification"
    assert isinstance(module.classifier, quantize.Int8Linear)
    texts = ["the best and funniest film", "a bad , dull mess"]
    float_model, _, tokenizer_path, _ = load_finetuned(run_dir)
    tokenizer = load_tokenizer(tokenizer_path)
    ours = classify.classify(module, tokenizer, labels, texts, 48)
    theirs = classify.classify(float_model, tokenizer, labels, texts, 48)
    for a, b in zip(ours, theirs, strict=True):
        assert abs(dict(a)["positive"] - dict(b)["positive"]) < 0.02
    capsys.readouterr()
    assert classify_cli.main(["--checkpoint", str(out), texts[0]]) == 0
    assert capsys.readouterr().out.split("\t")[0] == ours[0][0][0]
    with pytest.raises(ValueError, match="holds a fine-tuned model"):
        load_masked_lm(out)
