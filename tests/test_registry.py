"""The registry of model kinds: every kind builds, reads a recipe the data layer knows, and an
unknown kind is named."""

import pytest
from flax import nnx

from jaxlm.config import ConfigError, ModelConfig
from jaxlm.data.preparation import RECIPES
from jaxlm.objectives.registry import PRETRAINING, classify_task, pretraining_task


@pytest.mark.parametrize("kind", sorted(PRETRAINING))
def test_every_kind_builds_and_has_a_recipe(tiny_config, kind):
    task = pretraining_task(kind)
    assert task.recipe in RECIPES
    config = ModelConfig(**{**tiny_config.__dict__, "kind": kind})
    module = nnx.eval_shape(lambda: task.build(config, nnx.Rngs(0)))
    assert nnx.state(module, nnx.Param)


def test_the_kinds_and_their_recipes():
    assert {k: t.recipe for k, t in PRETRAINING.items()} == {
        "bert": "bert", "gpt": "causal_lm", "encoder_decoder": "span_corruption"}
    assert classify_task(3, 0.1).objectives == ("cls",)


def test_an_unknown_kind_is_named():
    with pytest.raises(ConfigError, match=r"model\.kind: 'bart' is not one of \('bert', 'gpt', "
                                          r"'encoder_decoder'\)"):
        pretraining_task("bart")
