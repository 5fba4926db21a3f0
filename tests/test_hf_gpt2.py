"""Numerical parity with the Hugging Face PyTorch GPT-2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlm.hf import gpt2 as hf_gpt2

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random-init transformers GPT2LMHeadModel (dropout off) saved to disk."""
    config = transformers.GPT2Config(vocab_size=99, n_positions=40, n_embd=32, n_layer=3,
                                     n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    directory = tmp_path_factory.mktemp("hf_gpt2")
    model.save_pretrained(directory)
    return model, directory


def test_logits_match_transformers(reference):
    ref, directory = reference
    model, config = hf_gpt2.from_pretrained(directory)
    assert (config.kind, config.num_layers, config.intermediate_size) == ("gpt", 3, 128)
    ids = np.random.default_rng(0).integers(0, 99, (2, 17))
    ours = np.asarray(model(jnp.asarray(ids)))
    with torch.no_grad():
        theirs = ref(torch.tensor(ids)).logits.numpy()
    assert np.abs(ours - theirs).max() < 1e-5
    # Device arrays, not NumPy ones, which every call of a compiled step would copy in again.
    assert all(isinstance(v, jax.Array) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_padded_logits_match_transformers(reference):
    """Left padding: HF takes explicit position ids; jaxlm derives them from the mask."""
    ref, directory = reference
    model, _ = hf_gpt2.from_pretrained(directory)
    ids = np.random.default_rng(1).integers(0, 99, (2, 9))
    mask = np.ones_like(ids)
    mask[0, :4] = 0
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    with torch.no_grad():
        theirs = ref(torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions)).logits.numpy()
    assert np.abs(ours - theirs)[mask.astype(bool)].max() < 1e-5


def test_unsupported_activation_is_refused():
    with pytest.raises(ValueError, match="activation_function='relu'"):
        hf_gpt2.config_from_hf({"activation_function": "relu", "n_embd": 8})


def test_missing_weights_file_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"n_embd": 8, "n_layer": 1, "n_head": 2}')
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        hf_gpt2.from_pretrained(tmp_path)
