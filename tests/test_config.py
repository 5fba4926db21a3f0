from pathlib import Path

import pytest

from jaxlm.config import ConfigError, ModelConfig, load

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))


def test_bert_sizes_match_the_published_shapes():
    sizes = {p.stem: load(p).model for p in CONFIGS if p.stem.startswith("bert_")}
    shapes = {name: (m.num_layers, m.hidden_size, m.num_heads) for name, m in sizes.items()}
    assert shapes == {
        "bert_tiny": (2, 128, 2), "bert_mini": (4, 256, 4), "bert_small": (4, 512, 8),
        "bert_medium": (8, 512, 8), "bert_base": (12, 768, 12), "bert_large": (24, 1024, 16),
    }
    for m in sizes.values():
        assert m.intermediate_size == 4 * m.hidden_size
        assert m.max_position_embeddings == 512 and m.type_vocab_size == 2


def test_overrides_are_typed():
    cfg = load(CONFIGS[0], ["model.num_layers=3", "model.hidden_dropout=0", "run_dir=/tmp/x",
                            "model.layer_norm_eps=1e-5", "model.dtype=bfloat16"])
    assert cfg.model.num_layers == 3
    assert cfg.model.hidden_dropout == 0.0 and isinstance(cfg.model.hidden_dropout, float)
    assert cfg.model.layer_norm_eps == 1e-5
    assert cfg.model.dtype == "bfloat16"
    assert cfg.run_dir == "/tmp/x"


def test_defaults_without_a_file():
    assert load(None).model == ModelConfig()


@pytest.mark.parametrize("override, message", [
    ("model.num_layer=3", "unknown key 'model.num_layer'"),
    ("modle.num_layers=3", "unknown key 'modle'"),
    ("model.num_layers=three", "model.num_layers: expected int"),
    ("model.num_layers=2.5", "model.num_layers: expected int"),
    ("model.hidden_dropout=true", "model.hidden_dropout: expected float"),
    ("model.num_heads=3", "model.hidden_size: 128 is not divisible by model.num_heads=3"),
    ("model.dtype=float8", "model.dtype: 'float8' is not one of"),
    ("model.num_layers", "expected key.sub=value"),
    ("model.hidden_dropout=1.5", "model.hidden_dropout: must be in [0, 1)"),
])
def test_bad_overrides_name_the_key_and_file(override, message):
    path = Path(__file__).parent.parent / "configs" / "bert_tiny.yaml"
    with pytest.raises(ConfigError) as e:
        load(path, [override])
    assert message in str(e.value)
    if "=" in override:
        assert "bert_tiny.yaml" in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden_size: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)
    bad.write_text("model:\n  hidden_sise: 64\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'model.hidden_sise'"):
        load(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load(bad)


def test_finetune_config_parses_and_checks_its_keys():
    from jaxlm.config import FinetuneConfig

    path = Path(__file__).parent.parent / "configs" / "finetune_classify.yaml"
    cfg = load(path, ["finetune.lora_rank=8", "data.column_names=[label, text]"],
               cls=FinetuneConfig)
    assert cfg.finetune.lora_rank == 8 and cfg.data.column_names == ("label", "text")
    assert cfg.train.batch_size == 32
    with pytest.raises(ConfigError, match="unknown key 'finetune.lora_rnk'"):
        load(path, ["finetune.lora_rnk=8"], cls=FinetuneConfig)
    with pytest.raises(ConfigError, match="finetune.metric"):
        load(path, ["finetune.metric=bleu"], cls=FinetuneConfig)
    with pytest.raises(ConfigError, match="must leave examples to train on"):
        load(path, ["data.validation_fraction=0.5", "data.test_fraction=0.5"],
             cls=FinetuneConfig)


@pytest.mark.parametrize("name, task, metric, dataset", [
    ("finetune_classify", "sequence_classification", "accuracy", "polarity"),
    ("finetune_ner", "token_classification", "f1", "wnut16"),
    ("finetune_pos", "token_classification", "accuracy", "wsj_pos"),
    ("finetune_qa", "question_answering", "f1", "squad_shifts"),
])
def test_each_task_config_parses(name, task, metric, dataset):
    from jaxlm.config import FinetuneConfig

    cfg = load(Path(__file__).parent.parent / "configs" / f"{name}.yaml", cls=FinetuneConfig)
    assert (cfg.finetune.task, cfg.metric, cfg.dataset) == (task, metric, dataset)


def test_a_task_refuses_what_belongs_to_another():
    from jaxlm.config import FinetuneConfig

    with pytest.raises(ConfigError, match=r"data.dataset: 'wnut16' is not a data set of "
                                          r"question_answering"):
        load(None, ["finetune.task=question_answering", "data.dataset=wnut16"],
             cls=FinetuneConfig)
    with pytest.raises(ConfigError, match=r"finetune.task: 'ner' is not one of"):
        load(None, ["finetune.task=ner"], cls=FinetuneConfig)
    assert load(None, ["finetune.task=question_answering"], cls=FinetuneConfig).metric == "f1"
