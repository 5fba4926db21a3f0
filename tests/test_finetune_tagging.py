"""Token classification end to end on real tagged text (Penn Treebank WSJ part-of-speech):
a LoRA run, its scores, the tag command, export to transformers, bad input."""

import collections
import json

import numpy as np
import pytest
from data_fixtures import tiny_hf_bert

from jaxlm import export, finetune
from jaxlm import tag as tag_cli
from jaxlm.config import FinetuneConfig, load
from jaxlm.data import tagging
from jaxlm.inference.load import load_finetuned


@pytest.fixture(scope="module")
def wsj(tmp_path_factory):
    """The WSJ tagged lines as a word/TAG file, and a tiny random BERT (Hugging Face dir)
    with a tokenizer trained on their words."""
    root = tmp_path_factory.mktemp("tagging")
    path = tagging.fetch_wsj_pos("~/.cache/jaxlm")
    sentences = tagging.read_tagged(path, "word_tag")
    tiny_hf_bert(root, [" ".join(s.words) for s in sentences], 128)
    return root, path, sentences


def _overrides(root, run_dir, *extra):
    return [f"init_from={root / 'tiny_bert'}", f"run_dir={run_dir}",
            "finetune.task=token_classification", "data.dataset=wsj_pos",
            "data.max_train_examples=320", "data.max_seq_length=128", "train.batch_size=16",
            "train.learning_rate=1e-2", "train.log_every=10", "train.progress_bar=false",
            "train.tensorboard=false", "train.async_checkpoint=false", "finetune.epochs=3",
            "finetune.metric=accuracy", *extra]


def test_lora_tagger_end_to_end(wsj, tmp_path, capsys):
    """Three epochs of LoRA on 320 WSJ lines: word accuracy above the most-frequent-tag
    baseline, the scores in results.json, the tag command, and transformers computing the
    same logits from the export."""
    root, _, sentences = wsj
    R, D, L = 4, 32, 2
    run_dir = tmp_path / "pos"
    results = finetune.run(load(None, _overrides(root, run_dir, f"finetune.lora_rank={R}"),
                                cls=FinetuneConfig))
    K = len(results["labels"])
    assert K == len(tagging.tag_set(sentences)) == 44  # every tag of the file
    assert results["trainable_params"] == L * 4 * 2 * D * R + D * K + K
    assert results["sizes"]["train"] == 320 and results["sizes"]["test"] == round(0.1 * 1001)
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["test"] == results["test"]
    # The baseline: every word gets the training lines' most frequent tag (NN).
    train_tags = collections.Counter(t for s in sentences for t in s.tags)
    baseline = train_tags.most_common(1)[0][1] / sum(train_tags.values())
    assert results["test"]["accuracy"] > baseline + 0.05, (results["test"], baseline)
    evals = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "eval_accuracy" in s]
    assert len(evals) == 3 and results["validation"]["accuracy"] == max(
        d["eval_accuracy"] for d in evals)

    text = "The company said its profit rose 5 % in the third quarter ."
    assert tag_cli.main(["--checkpoint", str(run_dir), text]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [w.rsplit("/", 1)[0] for w in printed[0].split()] == text.split()
    assert all(w.rsplit("/", 1)[1] in results["labels"] for w in printed[0].split())

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    assert export.main(["--checkpoint", str(run_dir), "--out", str(tmp_path / "hf")]) == 0
    theirs = transformers.BertForTokenClassification.from_pretrained(tmp_path / "hf").eval()
    assert theirs.config.id2label[0] == results["labels"][0]
    module, _, _, _ = load_finetuned(run_dir)
    ids = np.array([[2, 40, 41, 42, 3, 0]], np.int32)
    mask = (ids > 0).astype(np.int32)
    ours = np.asarray(module(ids, np.zeros_like(ids), mask))
    with torch.no_grad():
        expected = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    np.testing.assert_allclose(ours, expected.numpy(), atol=1e-5)


def test_bad_tagging_input_is_named(wsj, tmp_path):
    root, path, _ = wsj

    def run(*extra):
        return finetune.run(load(None, _overrides(root, tmp_path / "bad", *extra),
                                 cls=FinetuneConfig))

    validation = tmp_path / "validation.txt"
    validation.write_text("The/DT cat/NN sat/VBD ./.\nA/DT cat/NN meowed/XYZ ./.\n")
    with pytest.raises(Exception, match=rf"{validation}:2: word 3 \('meowed'\) has the tag "
                                        r"'XYZ', which the training data lacks"):
        run(f"data.validation_file={validation}")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(Exception, match=str(empty)):
        run(f"data.train_file={empty}", "data.format=word_tag")
    with pytest.raises(Exception, match=r"data.format: 'csv' is not a format of "
                                        r"token_classification"):
        run("data.format=csv")
    with pytest.raises(Exception, match=r"finetune.metric: 'macro_f1' is not one of"):
        run("finetune.metric=macro_f1")
    assert not (tmp_path / "bad").exists()  # nothing written before the inputs were checked
