"""Hugging Face BERT checkpoints: load into jaxlm and save back, through one table.

    model, config = from_pretrained("path/to/bert")   # config.json + model.safetensors
    save_pretrained(model, config, "out/")            # transformers loads "out/"
    python -m jaxlm.export --checkpoint runs/bert_tiny --out hf_bert_tiny/

Reading safetensors needs only numpy; `pytorch_model.bin` needs torch.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
from flax import nnx
from safetensors.numpy import save

from jaxlm.config import ModelConfig
from jaxlm.data import load_tokenizer
from jaxlm.hf.common import assign, expand_table, load_arrays
from jaxlm.models.bert import (
    HEAD_AXES,
    NEURON_AXES,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from jaxlm.nn.layers import Linear

# Hugging Face name -> jaxlm parameter path, and how the array is laid out on each side.
#   same:        identical arrays
#   flat:        [N*H] <-> [N, H]                 (biases of the head projections)
#   dense:       [out, in] <-> [in, out]          (torch Linear stores the transpose)
#   dense_heads: [N*H, D] <-> [D, N, H]           (query/key/value)
#   heads_dense: [D, N*H] <-> [N, H, D]           (attention output)
_LAYER = "bert.encoder.layer.{i}."
_BLOCK = "bert.layers.{i}."
TABLE: tuple[tuple[str, str, str], ...] = (
    ("bert.embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.embedding",
     "same"),
    ("bert.embeddings.position_embeddings.weight",
     "bert.embeddings.position_embeddings.embedding", "same"),
    ("bert.embeddings.token_type_embeddings.weight",
     "bert.embeddings.token_type_embeddings.embedding", "same"),
    ("bert.embeddings.LayerNorm.weight", "bert.embeddings.norm.scale", "same"),
    ("bert.embeddings.LayerNorm.bias", "bert.embeddings.norm.bias", "same"),
    (_LAYER + "attention.self.query.weight", _BLOCK + "attention.query.kernel", "dense_heads"),
    (_LAYER + "attention.self.query.bias", _BLOCK + "attention.query.bias", "flat"),
    (_LAYER + "attention.self.key.weight", _BLOCK + "attention.key.kernel", "dense_heads"),
    (_LAYER + "attention.self.key.bias", _BLOCK + "attention.key.bias", "flat"),
    (_LAYER + "attention.self.value.weight", _BLOCK + "attention.value.kernel", "dense_heads"),
    (_LAYER + "attention.self.value.bias", _BLOCK + "attention.value.bias", "flat"),
    (_LAYER + "attention.output.dense.weight", _BLOCK + "attention.output.kernel",
     "heads_dense"),
    (_LAYER + "attention.output.dense.bias", _BLOCK + "attention.output.bias", "same"),
    (_LAYER + "attention.output.LayerNorm.weight", _BLOCK + "attention_norm.scale", "same"),
    (_LAYER + "attention.output.LayerNorm.bias", _BLOCK + "attention_norm.bias", "same"),
    (_LAYER + "intermediate.dense.weight", _BLOCK + "mlp.intermediate.kernel", "dense"),
    (_LAYER + "intermediate.dense.bias", _BLOCK + "mlp.intermediate.bias", "same"),
    (_LAYER + "output.dense.weight", _BLOCK + "mlp.output.kernel", "dense"),
    (_LAYER + "output.dense.bias", _BLOCK + "mlp.output.bias", "same"),
    (_LAYER + "output.LayerNorm.weight", _BLOCK + "mlp_norm.scale", "same"),
    (_LAYER + "output.LayerNorm.bias", _BLOCK + "mlp_norm.bias", "same"),
    ("bert.pooler.dense.weight", "bert.pooler.dense.kernel", "dense"),
    ("bert.pooler.dense.bias", "bert.pooler.dense.bias", "same"),
    ("cls.predictions.transform.dense.weight", "mlm_head.transform.kernel", "dense"),
    ("cls.predictions.transform.dense.bias", "mlm_head.transform.bias", "same"),
    ("cls.predictions.transform.LayerNorm.weight", "mlm_head.norm.scale", "same"),
    ("cls.predictions.transform.LayerNorm.bias", "mlm_head.norm.bias", "same"),
    ("cls.predictions.bias", "mlm_head.bias", "same"),
    ("cls.seq_relationship.weight", "nsp_head.dense.kernel", "dense"),
    ("cls.seq_relationship.bias", "nsp_head.dense.bias", "same"),
)

# The fine-tuning heads: the encoder rows of TABLE (without the pooler for the heads that
# read every position, as transformers builds them) and the head's own.
_ENCODER = tuple(row for row in TABLE if row[0].startswith("bert."))
_CLASSIFIER = (("classifier.weight", "classifier.kernel", "dense"),
               ("classifier.bias", "classifier.bias", "same"))
CLASSIFIER_TABLE = _ENCODER + _CLASSIFIER
TAGGER_TABLE = tuple(row for row in _ENCODER if "pooler" not in row[0]) + _CLASSIFIER
QA_TABLE = tuple(row for row in _ENCODER if "pooler" not in row[0]) + (
    ("qa_outputs.weight", "qa_outputs.kernel", "dense"),
    ("qa_outputs.bias", "qa_outputs.bias", "same"),
)

# jaxlm module -> the transformers architecture it is saved as, and its table.
HEADS = {
    BertForPreTraining: ("BertForPreTraining", TABLE),
    BertForSequenceClassification: ("BertForSequenceClassification", CLASSIFIER_TABLE),
    BertForTokenClassification: ("BertForTokenClassification", TAGGER_TABLE),
    BertForQuestionAnswering: ("BertForQuestionAnswering", QA_TABLE),
}

# Present in Hugging Face files but carried by other entries: the output projection is
# tied to the word embeddings, its bias to cls.predictions.bias.
_REDUNDANT = re.compile(r"(.*position_ids|cls\.predictions\.decoder\.(weight|bias))$")

# HF config.json key -> ModelConfig field.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
}


def to_jaxlm(hf: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
    """Converts a Hugging Face array to the jaxlm parameter of `shape`."""
    if layout in ("dense", "dense_heads", "heads_dense"):
        hf = hf.T
    if hf.size != int(np.prod(shape)):
        raise ValueError(f"has {hf.shape} elements, the model expects {shape}")
    if layout == "same" and hf.shape != shape:
        raise ValueError(f"has shape {hf.shape}, the model expects {shape}")
    return np.ascontiguousarray(hf.reshape(shape))


def to_hf(x: np.ndarray, layout: str) -> np.ndarray:
    """Converts a jaxlm parameter to its Hugging Face layout."""
    if layout == "flat":
        return x.reshape(-1)
    if layout == "dense_heads":
        return x.reshape(x.shape[0], -1).T
    if layout == "heads_dense":
        return x.reshape(-1, x.shape[-1]).T
    if layout == "dense":
        return x.T
    return x


def config_from_hf(hf_config: dict, **overrides) -> ModelConfig:
    """ModelConfig from a Hugging Face BERT config.json dict."""
    act = hf_config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"hidden_act={act!r} is not supported; jaxlm BERT uses exact 'gelu'")
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"position_embedding_type={position_type!r} is not supported")
    fields = {ours: hf_config[theirs] for theirs, ours in _CONFIG_KEYS.items()
              if theirs in hf_config}
    return ModelConfig(**{**fields, **overrides})


def config_to_hf(config: ModelConfig) -> dict:
    """A Hugging Face BERT config.json dict for `config`."""
    if config.qk_norm:
        raise ValueError("model.qk_norm=true has no Hugging Face BERT equivalent (its "
                         "attention does not normalize queries and keys); export needs a "
                         "model trained with qk_norm=false")
    fields = {theirs: getattr(config, ours) for theirs, ours in _CONFIG_KEYS.items()}
    return {"architectures": ["BertForPreTraining"], "model_type": "bert",
            "hidden_act": "gelu", "position_embedding_type": "absolute",
            "pad_token_id": 0, "tie_word_embeddings": True, **fields}


def read_weights(directory: Path) -> dict[str, np.ndarray]:
    """All arrays of a Hugging Face BERT checkpoint, with canonical BertForPreTraining names.

    Accepts a bare `BertModel` (no `bert.` prefix) and TF-era `gamma`/`beta` names.
    """
    weights = load_arrays(directory)
    bare = not any(k.startswith("bert.") for k in weights)
    renamed = {}
    for name, array in weights.items():
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight")
        name = name.replace("LayerNorm.beta", "LayerNorm.bias")
        if bare and not name.startswith("cls."):
            name = "bert." + name
        renamed[name] = array
    return renamed


def from_pretrained(path: str | Path, *, dtype: str = "float32", seed: int = 0,
                    encoder_only: bool = False) -> tuple[BertForPreTraining, ModelConfig]:
    """Loads a Hugging Face BERT directory as a jaxlm `BertForPreTraining`.

    Parameters absent from the checkpoint (e.g. the pretraining heads of a bare
    `BertModel`) keep their fresh initialisation from `seed`, with a warning naming them;
    with `encoder_only` (for fine-tuning) only missing `bert.*` parameters are named.

    Raises:
      FileNotFoundError: no config.json or weights in `path`.
      ValueError: a checkpoint array whose shape disagrees with config.json.
    """
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: no config.json (is this a Hugging Face model?)")
    config = config_from_hf(json.loads((directory / "config.json").read_text()), dtype=dtype)
    weights = read_weights(directory)
    model = BertForPreTraining(config, rngs=nnx.Rngs(params=seed, dropout=seed))
    missing = assign(model, weights, TABLE, to_jaxlm, directory)
    if encoder_only:
        missing = [name for name in missing if name.startswith("bert.")]
    if missing:
        warnings.warn(f"{directory}: not in the checkpoint, freshly initialised: "
                      f"{', '.join(missing)}", stacklevel=2)
    unused = [k for k in weights if not _REDUNDANT.match(k)]
    if unused:
        warnings.warn(f"{directory}: ignored checkpoint arrays: {', '.join(unused)}",
                      stacklevel=2)
    return model, config


def from_pretrained_head(path: str | Path, *, dtype: str = "float32"
                         ) -> tuple[nnx.Module, tuple[str, ...] | None]:
    """A fine-tuned Hugging Face BERT (BertForSequenceClassification, ...TokenClassification
    or ...QuestionAnswering, by config.json's `architectures`) as the jaxlm module of the same
    head, in eval mode, and its labels (id2label; None for question answering).

    Raises:
      FileNotFoundError: no config.json or weights in `path`.
      ValueError: another architecture, or a checkpoint that lacks the head's arrays.
    """
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: no config.json (is this a Hugging Face model?)")
    hf_config = json.loads((directory / "config.json").read_text())
    config = config_from_hf(hf_config, dtype=dtype)
    architecture = (hf_config.get("architectures") or ["?"])[0]
    head = next((cls for cls, (name, _) in HEADS.items() if name == architecture), None)
    if head is None or head is BertForPreTraining:
        raise ValueError(f"{directory}: architecture {architecture!r} is not one of the "
                         f"fine-tuning heads {[n for n, _ in list(HEADS.values())[1:]]}")
    labels = None
    rngs = nnx.Rngs(params=0, dropout=0)
    if head is BertForQuestionAnswering:
        model = head(config, rngs=rngs)
    else:
        id2label = hf_config.get("id2label") or {}
        labels = tuple(id2label[k] for k in sorted(id2label, key=int))
        dropout = hf_config.get("classifier_dropout") or config.hidden_dropout
        model = head(config, len(labels), classifier_dropout=dropout, rngs=rngs)
    missing = assign(model, read_weights(directory), HEADS[head][1], to_jaxlm, directory)
    if missing:
        raise ValueError(f"{directory}: the checkpoint lacks {', '.join(missing[:5])}")
    model.eval()
    return model, labels


def merged_params(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters by dotted path, float32, with every LoRA adapter added into
    its kernel (W + A B alpha / R) and the adapters themselves left out."""
    params = {".".join(map(str, k)): np.asarray(v.get_value(), dtype=np.float32)
              for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param)) if "lora" not in k}
    for path, module in nnx.iter_modules(model):
        if isinstance(module, Linear) and module.lora is not None:
            name = ".".join(map(str, path)) + ".kernel"
            params[name] = params[name] + np.asarray(module.lora.delta(params[name].shape))
    return params


def full_width(params: dict[str, np.ndarray], config: ModelConfig) -> dict[str, np.ndarray]:
    """The parameters of a model whose layers lost heads or neurons to structured pruning,
    padded back with zeros to num_heads and intermediate_size: transformers 5 BERT has one
    width for all layers (its `prune_heads` is gone), and a zero head or neuron adds nothing
    to the output, so the logits stay the same."""
    padded = dict(params)
    for i in range(config.num_layers):
        for axes, full in ((HEAD_AXES, config.num_heads), (NEURON_AXES, config.intermediate_size)):
            for name, axis in axes.items():
                key = f"bert.layers.{i}.{name}"
                width = [(0, 0)] * params[key].ndim
                width[axis] = (0, full - params[key].shape[axis])
                padded[key] = np.pad(params[key], width)
    return padded


def save_pretrained(model: nnx.Module, config: ModelConfig, path: str | Path,
                    labels: tuple[str, ...] | None = None) -> Path:
    """Writes config.json + model.safetensors that transformers loads as the same
    architecture (`HEADS`), with id2label for the classifiers and taggers; a pruned model
    at its full width (`full_width`)."""
    architecture, table = HEADS[type(model)]
    hf_config = config_to_hf(config)
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    params = full_width(merged_params(model), config)
    weights = {hf_name: np.ascontiguousarray(to_hf(params[path_], layout))
               for hf_name, path_, layout in expand_table(table, config.num_layers)}
    # Written as bytes so that the file gets the usual permissions (save_file makes it 0600).
    (directory / "model.safetensors").write_bytes(save(weights, metadata={"format": "pt"}))
    hf_config["architectures"] = [architecture]
    if labels:
        hf_config.update(id2label=dict(enumerate(labels)),
                         label2id={label: i for i, label in enumerate(labels)})
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return directory


def save_tokenizer(tokenizer_path: str | Path, config: ModelConfig, path: str | Path) -> None:
    """Writes the tokenizer as Hugging Face BERT expects it next to the model: tokenizer.json
    (fast tokenizers), vocab.txt (one token per line, id = line number) and
    tokenizer_config.json."""
    directory = Path(path)
    tokenizer = load_tokenizer(tokenizer_path)
    shutil.copyfile(tokenizer_path, directory / "tokenizer.json")
    vocab = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    if [i for _, i in vocab] != list(range(len(vocab))):
        raise ValueError(f"{tokenizer_path}: token ids are not 0..{len(vocab) - 1}")
    (directory / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab))
    normalizer = tokenizer.normalizer
    lowercase = normalizer is not None and normalizer.normalize_str("A") == "a"
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
        "model_max_length": config.max_position_embeddings, "unk_token": "[UNK]",
        "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "mask_token": "[MASK]"}, indent=2) + "\n")
