"""Fill-mask: probabilities against the Hugging Face PyTorch BERT, buckets, the CLI."""

import numpy as np
import pytest

from jaxlm import fill_mask as fill_mask_cli
from jaxlm.inference import fill_mask
from jaxlm.inference.load import load_masked_lm

WORDS = ["to", "be", "or", "not", "that", "is", "the", "question", ",", "."]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("hf_fill")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=64,
                                     pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(config).eval()
    model.save_pretrained(directory)
    return directory, model, vocab


def test_probabilities_match_transformers(hf_dir):
    import torch

    directory, reference, vocab = hf_dir
    model, tokenizer = load_masked_lm(directory)
    texts = ["to be or [MASK] to be", "[MASK] is the [MASK] ."]
    out = fill_mask.fill_mask(model, tokenizer, texts, top_k=3)
    ids = [[2, 5, 6, 7, 4, 5, 6, 3], [2, 4, 10, 11, 4, 14, 3]]
    for text_ids, per_mask in zip(ids, out, strict=True):
        with torch.no_grad():
            logits = reference(torch.tensor([text_ids])).prediction_logits[0].numpy()
        where = [t for t, i in enumerate(text_ids) if i == 4]
        assert len(per_mask) == len(where)
        for t, candidates in zip(where, per_mask, strict=True):
            probs = np.exp(logits[t] - logits[t].max())
            probs /= probs.sum()
            best = np.argsort(-probs)[:3]
            assert [c[0] for c in candidates] == [vocab[i] for i in best]
            np.testing.assert_allclose([c[1] for c in candidates], probs[best], atol=1e-5)


def test_buckets_and_errors(hf_dir):
    assert [fill_mask.bucket(n, 64) for n in (3, 16, 17, 40, 100)] == [16, 16, 32, 64, 64]
    model, tokenizer = load_masked_lm(hf_dir[0])
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        fill_mask.fill_mask(model, tokenizer, ["to be"])
    with pytest.raises(ValueError, match="past the model's 64 positions"):
        fill_mask.fill_mask(model, tokenizer, ["to " * 70 + "[MASK]"])
    with pytest.raises(ValueError, match=r"top_k=500 is not in \[1, 15\], the vocabulary"):
        fill_mask.fill_mask(model, tokenizer, ["to [MASK]"], top_k=500)
    # A long text whose [MASK] fits is cut, not refused.
    assert len(fill_mask.fill_mask(model, tokenizer, ["[MASK] " + "be " * 80])[0]) == 1


def test_command_line(hf_dir, tmp_path, capsys):
    """On a Hugging Face directory; a jaxlm run directory goes through the same
    `inference.load.load_for_inference` as generation (tests/test_generate.py)."""
    assert fill_mask_cli.main(["--checkpoint", str(hf_dir[0]), "--top-k", "2",
                           "to [MASK] or", "[MASK] is the [MASK]"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "to [MASK] or" and out[1].startswith("  [MASK] 1: ")
    assert len(out) == 5
    assert fill_mask_cli.main(["--checkpoint", str(tmp_path / "none"), "x [MASK]"]) == 1
    assert "no checkpoint found" in capsys.readouterr().err
