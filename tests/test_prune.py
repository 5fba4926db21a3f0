"""Pruning: head and neuron importance against finite differences of a gate, a pruned model
against the full one with those heads and neurons zeroed, the gradual magnitude schedule
and masks against numpy, and both kinds end to end through `python -m jaxlm.prune`, export
to transformers included."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from data_fixtures import separable_overrides
from flax import nnx

from jaxlm import classify as classify_cli
from jaxlm import export, finetune
from jaxlm.compression import prune
from jaxlm.config import ConfigError, FinetuneConfig, ModelConfig, load
from jaxlm.hf.bert import merged_params
from jaxlm.inference.load import load_finetuned
from jaxlm.objectives.registry import finetuning_task


def _batch(vocab_size, seed=0, B=4, T=10):
    rng = np.random.default_rng(seed)
    mask = np.ones((B, T), np.int32)
    mask[1, 6:] = 0
    return {"input_ids": rng.integers(5, vocab_size, (B, T)).astype(np.int32),
            "token_type_ids": np.zeros((B, T), np.int32), "attention_mask": mask,
            "label": rng.integers(0, 3, B).astype(np.int32),
            "example_weights": np.ones(B, np.float32)}


def _classifier(config, seed=0):
    task = finetuning_task("sequence_classification", 3, 0.0)
    module = task.build(config, nnx.Rngs(seed))
    module.eval()
    return task, module


def _loss(task, module, batch):
    sums, counts = task.sums(module, batch), task.counts(batch)
    return sums["cls_loss"] / counts["cls"]


def test_importance_is_the_gradient_of_a_gate_on_each_head_and_neuron(tiny_config):
    """|dL/dxi| from the output kernels equals autodiff through explicit gates xi, one
    scaling each head's (neuron's) contribution."""
    config = dataclasses.replace(tiny_config, hidden_dropout=0.0, attention_dropout=0.0)
    task, module = _classifier(config)
    batch = _batch(config.vocab_size)
    heads, neurons = prune.importance(module, task, [batch])
    assert [h.shape for h in heads] == [(4,), (4,)] and neurons[0].shape == (37,)
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

    def gated_loss(xi, layer, part):
        gated = jax.tree.map(lambda x: x, params)
        output = gated["bert"]["layers"][layer][part]["output"]
        output["kernel"] = output["kernel"] * xi.reshape(-1, *[1] * (output["kernel"].ndim - 1))
        return _loss(task, nnx.merge(graphdef, gated, rest), batch)

    for layer in range(2):
        for part, expected in (("attention", heads[layer]), ("mlp", neurons[layer])):
            xi = jnp.ones(len(expected))
            gate_grad = jax.jit(jax.grad(gated_loss), static_argnums=(1, 2))
            np.testing.assert_allclose(expected, np.abs(gate_grad(xi, layer, part)),
                                       rtol=1e-4, atol=1e-9)


def test_least_important_takes_the_lowest_and_leaves_every_layer_one():
    scores = [np.array([0.1, 0.9, 0.2]), np.array([0.05, 0.06]), np.array([0.5, 0.4])]
    removed = prune.least_important(scores, [set(), set(), set()], 4)
    # 0.05 and 0.06 are lowest, but layer 1 keeps one of its two.
    assert removed == [{0, 2}, {0}, {1}]
    assert prune.least_important(scores, removed, 4) == removed
    assert prune.least_important(scores, [set(), set(), set()], 99) == [{0, 2}, {0}, {1}]


def test_normalized_scores_have_unit_norm_per_layer():
    out = prune.normalized([np.array([3.0, 4.0]), np.zeros(2)])
    np.testing.assert_allclose(out[0], [0.6, 0.8])
    np.testing.assert_array_equal(out[1], [0.0, 0.0])


def test_a_pruned_model_equals_the_full_model_with_those_heads_and_neurons_zeroed(tiny_config):
    config = dataclasses.replace(tiny_config, hidden_dropout=0.0, attention_dropout=0.0)
    task, module = _classifier(config, seed=3)
    weights = merged_params(module)
    kept_heads = [np.array([0, 2]), np.array([3])]
    kept_neurons = [np.arange(0, 37, 2), np.array([1, 4, 36])]
    small_config, small_weights = prune.slice_layers(config, weights, kept_heads, kept_neurons)
    assert small_config.layer_heads == (2, 1)
    assert small_config.layer_intermediate == (19, 3)
    _, small = _classifier(small_config)
    prune.load_arrays(small, small_weights, "test")

    zeroed = dict(weights)
    for i in range(2):
        for name, n, kept in (("attention.output.kernel", 4, kept_heads[i]),
                              ("mlp.output.kernel", 37, kept_neurons[i])):
            gone = np.setdiff1d(np.arange(n), kept)
            zeroed[f"bert.layers.{i}.{name}"] = weights[f"bert.layers.{i}.{name}"].copy()
            zeroed[f"bert.layers.{i}.{name}"][gone] = 0.0
    prune.load_arrays(module, zeroed, "test")
    batch = _batch(config.vocab_size, seed=1)
    inputs = [batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")]
    np.testing.assert_allclose(small(*inputs), module(*inputs), rtol=1e-5, atol=1e-6)
    assert small.bert.layers[1].attention.query.kernel.shape == (32, 1, 8)
    assert small.bert.layers[1].mlp.intermediate.kernel.shape == (32, 3)


def test_choose_removes_the_fractions_asked_and_zeroes_them(tiny_config):
    config = dataclasses.replace(tiny_config, hidden_dropout=0.0, attention_dropout=0.0)
    task, module = _classifier(config, seed=1)
    kept_heads, kept_neurons = prune.choose(
        module, task, lambda: [_batch(config.vocab_size, s) for s in range(2)], 0.5, 0.25)
    assert sum(map(len, kept_heads)) == 4 and all(len(k) >= 1 for k in kept_heads)
    assert sum(map(len, kept_neurons)) == 74 - round(0.25 * 74)
    for layer, kept in zip(module.bert.layers, kept_heads, strict=True):
        kernel = np.asarray(layer.attention.output.kernel.get_value())
        gone = np.setdiff1d(np.arange(4), kept)
        assert not kernel[gone].any() and kernel[kept].any()


@pytest.mark.parametrize("key", ["layer_heads", "layer_intermediate"])
def test_layer_widths_need_one_valid_size_per_layer(key):
    with pytest.raises(ConfigError, match=f"model.{key}"):
        ModelConfig(num_layers=2, **{key: (1,)})
    with pytest.raises(ConfigError, match=f"model.{key}"):
        ModelConfig(num_layers=2, **{key: (0, 1)})
    with pytest.raises(ConfigError, match="only BERT"):
        ModelConfig(kind="gpt", num_layers=2, **{key: (1, 1)})


def test_sparsity_schedule_is_zhu_and_gupta_cubic():
    steps = jnp.array([0, 10, 35, 60, 100, 200])
    got = prune.sparsity_at(steps, 0.8, 10, 60)
    expected = [0.0, 0.0, 0.8 * (1 - 0.5 ** 3), 0.8, 0.8, 0.8]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_magnitude_mask_drops_the_smallest_weights():
    w = np.random.default_rng(0).normal(size=(7, 9)).astype(np.float32)
    mask = np.asarray(prune.magnitude_mask(jnp.asarray(w), 0.5))
    k = int(np.floor(0.5 * w.size))
    assert (~mask).sum() == k
    assert np.abs(w[~mask]).max() < np.abs(w[mask]).min()
    assert np.asarray(prune.magnitude_mask(jnp.asarray(w), 0.0)).all()


def test_magnitude_pruning_keeps_pruned_weights_at_zero_and_never_regrows():
    """SGD chained with the pruning transformation on a toy problem: encoder kernels reach
    the final sparsity at `end` and keep it; biases and non-layer kernels are untouched."""
    rng = np.random.default_rng(0)
    params = {"bert": {"layers": {0: {"kernel": jnp.asarray(rng.normal(size=(8, 8))),
                                      "bias": jnp.asarray(rng.normal(size=8))}}},
              "classifier": {"kernel": jnp.asarray(rng.normal(size=(8, 2)))}}
    tx = optax.chain(optax.sgd(0.1), prune.magnitude_pruning(0.75, 2, 12, 5))
    state = tx.init(params)
    target = jax.tree.map(lambda p: jnp.ones_like(p), params)
    zeros_seen = []
    for t in range(20):
        grads = jax.tree.map(lambda p, y: p - y, params, target)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        kernel = np.asarray(params["bert"]["layers"][0]["kernel"])
        mask = np.asarray(state[1].masks["bert"]["layers"][0]["kernel"])
        assert (kernel[~mask] == 0).all()
        zeros_seen.append(~mask)
        if t:
            assert (zeros_seen[-1] >= zeros_seen[-2]).all()  # pruned stays pruned
    assert (~zeros_seen[-1]).sum() == 64 - 48
    assert zeros_seen[2].sum() == 0 and 0 < zeros_seen[8].sum() < 48  # gradual from step 2
    assert np.asarray(params["bert"]["layers"][0]["bias"]).all()
    assert np.asarray(params["classifier"]["kernel"]).all()


@pytest.fixture(scope="module")
def classifier_root(tiny_classifier):
    return tiny_classifier.parent


def _overrides(root, run_dir, *extra):
    return separable_overrides(root, run_dir, f"init_from={root / 'classifier'}",
                               "finetune.epochs=1", *extra)


@pytest.mark.slow  # end to end over 20 s on 2 cores
def test_pruned_end_to_end_and_exported_to_transformers(classifier_root, tmp_path, capsys):
    """`python -m jaxlm.prune` removes half the heads and a quarter of the MLP neurons of a
    fine-tuned tiny BERT and trains the smaller model one epoch while zeroing 60% of each
    encoder matrix by magnitude. The saved model has those widths and that sparsity, as
    results.json reports; jaxlm.classify serves it, and its export loads in transformers
    as a BertForSequenceClassification with the same logits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    run_dir = tmp_path / "pruned"
    assert finetune.main(_overrides(classifier_root, run_dir, "prune.heads=0.5",
                                    "prune.neurons=0.25", "prune.sparsity=0.6",
                                    "prune.end=0.5", "prune.every=2"), command="prune") == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert sum(results["layer_heads"]) == 4 and sum(results["layer_intermediate"]) == 96
    assert set(results["pruned"]) == {"validation", "test"}
    assert 0.0 <= results["pruned"]["test"]["accuracy"] <= 1.0
    capsys.readouterr()
    assert classify_cli.main(["--checkpoint", str(run_dir), "the best film"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("positive", "negative")

    module, _, _, _ = load_finetuned(run_dir)
    assert tuple(results["layer_heads"]) == module.config.layer_heads
    for path, kernel in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        name = ".".join(map(str, path))
        if name.startswith("bert.layers.") and name.endswith("kernel"):
            w = np.asarray(kernel.get_value())
            assert (w == 0).sum() == int(np.floor(0.6 * w.size)), name
            assert results["sparsity"][name] == pytest.approx((w == 0).mean())
    assert results["sparsity"]["encoder"] == pytest.approx(0.6, abs=1e-3)

    export.export(run_dir, tmp_path / "hf")
    theirs = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    ids = np.random.default_rng(0).integers(5, 60, (3, 12))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        expected = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                          token_type_ids=torch.zeros_like(torch.tensor(ids))).logits.numpy()
    ours = module(jnp.asarray(ids), jnp.zeros_like(jnp.asarray(ids)), jnp.asarray(mask))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_pruning_needs_something_to_prune_and_a_fine_tuned_model(classifier_root, tmp_path,
                                                                capsys):
    assert finetune.main(_overrides(classifier_root, tmp_path / "a", "prune.heads=0"),
                         command="prune") == 1
    assert "nothing to prune" in capsys.readouterr().err
    cfg = load(None, [*_overrides(classifier_root, tmp_path / "b", "prune.heads=0.5"),
                      f"init_from={classifier_root / 'tiny_bert'}"], cls=FinetuneConfig)
    with pytest.raises(ConfigError, match="must be a model fine-tuned"):
        finetune.run(cfg)
    assert not (tmp_path / "b").exists()


def test_a_fine_tuned_init_needs_the_same_labels(classifier_root, tmp_path):
    relabelled = tmp_path / "relabelled.csv"
    relabelled.write_text((classifier_root / "separable.csv").read_text()
                          .replace("positive,", "good,"))
    cfg = load(None, [*_overrides(classifier_root, tmp_path / "run"),
                      f"data.train_file={relabelled}"], cls=FinetuneConfig)
    with pytest.raises(ConfigError, match="same labels"):
        finetune.run(cfg)
