"""Knowledge distillation: the soft-target loss against numpy, the student built from the
teacher's layers, and a distilled run end to end on real sentences."""

import dataclasses
import hashlib
import json

import jax
import numpy as np
import pytest
from data_fixtures import separable_overrides, tiny_hf_bert
from flax import nnx

from jaxlm import classify as classify_cli
from jaxlm import fill_mask as fill_mask_cli
from jaxlm import finetune, pretrain
from jaxlm.compression import distill
from jaxlm.config import (
    ConfigError,
    DistillOptions,
    FinetuneConfig,
    MeshConfig,
    ModelConfig,
    load,
)
from jaxlm.data import load_tokenizer
from jaxlm.data.tokenizer import encode_padded
from jaxlm.hf import bert as hf
from jaxlm.inference.load import load_finetuned, load_for_inference, load_teacher
from jaxlm.models.bert import BertForPreTraining
from jaxlm.objectives.registry import classify_task
from jaxlm.training import optim, sharding
from jaxlm.training.state import load_weights, merge, setup_state


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_kd(student, teacher, T):
    log_p, log_q = _np_log_softmax(teacher / T), _np_log_softmax(student / T)
    return T ** 2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)


@pytest.mark.parametrize(("teacher", "student", "expected"), [
    (6, 3, [0, 2, 4]), (12, 4, [0, 3, 6, 9]), (12, 6, [0, 2, 4, 6, 8, 10]), (5, 2, [0, 2]),
    (2, 2, [0, 1]), (2, 1, [0])])
def test_teacher_layers_are_evenly_spaced_from_the_first(teacher, student, expected):
    assert distill.teacher_layers(teacher, student) == expected


@pytest.mark.parametrize("student", [0, 7])
def test_a_student_cannot_have_more_layers_than_its_teacher(student):
    with pytest.raises(ValueError, match=f"distill.student_layers={student}"):
        distill.teacher_layers(6, student)


def test_student_from_teacher_renumbers_the_layers_it_keeps(tiny_config):
    names = ["bert.embeddings.norm.scale", "bert.pooler.dense.kernel", "classifier.kernel",
             *(f"bert.layers.{i}.attention.query.kernel" for i in range(4))]
    pruned = dataclasses.replace(tiny_config, num_layers=4, layer_heads=(1, 2, 3, 4),
                                 layer_intermediate=(5, 6, 7, 8))
    teacher = distill.Teacher(pruned, "sequence_classification", ("a", "b"),
                              {n: np.full(2, i, np.float32) for i, n in enumerate(names)},
                              "tok.json", "teacher")
    config, weights = distill.student_from_teacher(teacher, 2)
    assert config.num_layers == 2 and config.hidden_size == tiny_config.hidden_size
    assert config.layer_heads == (1, 3) and config.layer_intermediate == (5, 7)
    assert sorted(weights) == sorted(names[:3] + [f"bert.layers.{i}.attention.query.kernel"
                                                  for i in range(2)])
    # Student layer 1 is teacher layer 2 (the fifth name).
    assert weights["bert.layers.1.attention.query.kernel"][0] == 5
    assert weights["classifier.kernel"][0] == 2


@pytest.mark.parametrize("objective", ["mlm", "cls", "tag", "span"])
def test_distillation_sums_match_numpy(objective):
    rng = np.random.default_rng(0)
    B, T, K, temperature = 4, 5, 3, 2.0
    w_B = np.array([1, 1, 1, 0], np.float32)  # the last row is padding
    batch = {"example_weights": w_B,
             "tag_weights": (rng.random((B, T)) < 0.6).astype(np.float32),
             "masked_weights": (rng.random((B, T)) < 0.6).astype(np.float32)}
    if objective == "mlm":  # (logits at the masked positions, next-sentence logits)
        student, teacher = ((rng.normal(size=(B, T, K)).astype(np.float32) * 2,
                             rng.normal(size=(B, 2)).astype(np.float32)) for _ in range(2))
        terms = [(student[0], teacher[0], batch["masked_weights"])]
    elif objective == "cls":
        student, teacher = (rng.normal(size=(B, K)).astype(np.float32) * 2 for _ in range(2))
        terms = [(student[:, None], teacher[:, None], w_B[:, None])]
    elif objective == "tag":
        student, teacher = (rng.normal(size=(B, T, K)).astype(np.float32) * 2 for _ in range(2))
        terms = [(student, teacher, batch["tag_weights"])]
    else:
        s_start, s_end, t_start, t_end = (rng.normal(size=(B, T)).astype(np.float32) * 2
                                          for _ in range(4))
        student, teacher = (s_start, s_end), (t_start, t_end)
        terms = [(s_start[:, None], t_start[:, None], w_B[:, None]),
                 (s_end[:, None], t_end[:, None], w_B[:, None])]
    got = distill.distillation_sums(objective, student, teacher, batch, temperature)
    kd = np.mean([(_np_kd(s.astype(np.float64), t.astype(np.float64), temperature) * w).sum()
                  for s, t, w in terms])
    agree = np.mean([((s.argmax(-1) == t.argmax(-1)) * w).sum() for s, t, w in terms])
    np.testing.assert_allclose(got["kd_loss"], kd, rtol=1e-5)
    np.testing.assert_allclose(got["kd_correct"], agree)


@pytest.fixture(scope="module")
def teacher_run(tiny_classifier):
    """The directory of the teacher (`classifier/`, a fine-tuned tiny BERT), its data and base."""
    return tiny_classifier.parent


def _digest(directory):
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("teacher", "student", "expected"), [
    (6, 3, [1, 3, 5]), (4, 2, [1, 3]), (2, 2, [0, 1]), (12, 4, [2, 5, 8, 11]), (2, 1, [1])])
def test_transfer_layers_end_on_the_last(teacher, student, expected):
    assert distill.transfer_layers(teacher, student) == expected


def test_hidden_mse_and_attention_kl_match_numpy():
    rng = np.random.default_rng(0)
    B, N, T, E = 2, 3, 5, 4
    w_BT = np.ones((B, T), np.float32)
    w_BT[1, 3:] = 0.0  # padding
    s_BTE, t_BTE = rng.normal(size=(2, B, T, E)).astype(np.float32)
    np.testing.assert_allclose(distill.hidden_mse(s_BTE, t_BTE, w_BT),
                               (((s_BTE - t_BTE) ** 2).mean(-1) * w_BT).sum(), rtol=1e-5)

    def probs(logits, keys_BS):
        z = np.where(keys_BS[:, None, None, :] > 0, logits, -np.inf)
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    s_BNTS, t_BNTS = (probs(rng.normal(size=(B, N, T, T)), w_BT) for _ in range(2))
    terms = np.where(t_BNTS > 0, t_BNTS * (np.log(np.where(t_BNTS > 0, t_BNTS, 1))
                                           - np.log(np.where(s_BNTS > 0, s_BNTS, 1))), 0.0)
    expected = (terms.sum(-1).mean(1) * w_BT).sum()
    got = distill.attention_kl(s_BNTS.astype(np.float32), t_BNTS.astype(np.float32), w_BT)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    grad = jax.grad(lambda s: distill.attention_kl(s, t_BNTS.astype(np.float32), w_BT))(
        s_BNTS.astype(np.float32))
    assert np.isfinite(grad).all()  # masked keys have probability 0 on both sides


def test_layer_transfer_checks_its_map(tiny_config):
    teacher = dataclasses.replace(tiny_config, num_layers=4)
    student = dataclasses.replace(tiny_config, num_layers=2)
    assert distill.check_transfer(student, teacher, DistillOptions(hidden_weight=1.0)) == [1, 3]
    for layer_map in ((0,), (0, 4)):
        with pytest.raises(ConfigError, match="distill.layer_map"):
            distill.check_transfer(student, teacher, DistillOptions(hidden_weight=1.0,
                                                                    layer_map=layer_map))
    fewer_heads = dataclasses.replace(student, layer_heads=(4, 2))
    assert distill.check_transfer(fewer_heads, teacher, DistillOptions(hidden_weight=1.0))
    with pytest.raises(ConfigError, match="student layer 1 has 2 heads"):
        distill.check_transfer(fewer_heads, teacher, DistillOptions(attention_weight=1.0))


@pytest.mark.slow  # end to end over 20 s on 2 cores
def test_layer_transfer_into_a_narrower_student(teacher_run, tmp_path, capsys):
    """A one-layer student half the teacher's width learns from the last teacher layer's
    outputs (through a learned 16 -> 32 projection) and attention distributions besides the
    soft targets; the logged loss is the weighted sum, the projection is trained and saved,
    and the student alone loads and classifies."""
    tokenizer = load_tokenizer(teacher_run / "tokenizer.json")
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_layers=1,
                         num_heads=4, intermediate_size=32, max_position_embeddings=64)
    narrow = hf.save_pretrained(BertForPreTraining(config, rngs=nnx.Rngs(0)), config,
                                tmp_path / "narrow")
    hf.save_tokenizer(teacher_run / "tokenizer.json", config, narrow)
    run_dir = tmp_path / "student"
    assert finetune.main(separable_overrides(
        teacher_run, run_dir, f"init_from={narrow}", "finetune.epochs=1",
        f"distill.teacher={teacher_run / 'classifier'}", "distill.hidden_weight=2.0",
        "distill.attention_weight=0.5"), command="distill") == 0
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [d for d in lines if "hidden_loss" in d]
    assert train and not any("hidden_accuracy" in d or "attention_accuracy" in d for d in lines)
    assert all(np.isclose(d["loss"], 0.5 * d["cls_loss"] + 0.5 * d["kd_loss"]
                          + 2.0 * d["hidden_loss"] + 0.5 * d["attention_loss"], rtol=1e-5)
               and d["hidden_loss"] > 0 and d["attention_loss"] > 0 for d in train)
    module, labels, _, _ = load_finetuned(run_dir)
    assert module.config.hidden_size == 16 and not hasattr(module, "distill_projection")
    capsys.readouterr()
    assert classify_cli.main(["--checkpoint", str(run_dir), "the best film"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in labels


@pytest.mark.slow  # end to end over 20 s on 2 cores
def test_a_distilled_student_end_to_end(teacher_run, tmp_path, capsys):
    """`python -m jaxlm.distill` with a one-layer student taken from a two-layer teacher: the
    student alone trained and saved, both losses and the agreement logged, the teacher's run
    untouched, and the student served by jaxlm.classify as any fine-tuned run."""
    before = _digest(teacher_run / "classifier")
    run_dir = tmp_path / "student"
    assert finetune.main([*separable_overrides(teacher_run, run_dir, "finetune.epochs=2",
                                      f"distill.teacher={teacher_run / 'classifier'}",
                                      "distill.student_layers=1")], command="distill") == 0
    assert _digest(teacher_run / "classifier") == before
    results = json.loads((run_dir / "results.json").read_text())
    D, F, V = 32, 64, load_tokenizer(teacher_run / "tokenizer.json").get_vocab_size()
    layer = 4 * (D * D + D) + 2 * D + D * F + F + F * D + D + 2 * D
    embeddings = (V + 64 + 2) * D + 2 * D
    assert results["trainable_params"] == results["total_params"] == (
        embeddings + layer + D * D + D + 2 * D + 2)  # one layer, pooler, classifier
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [d for d in lines if "kd_loss" in d]
    assert train and all(d["kd_loss"] >= 0 and 0 <= d["kd_accuracy"] <= 1 for d in train)
    assert all(np.isclose(d["loss"], 0.5 * d["cls_loss"] + 0.5 * d["kd_loss"], rtol=1e-5)
               for d in train)
    assert [d for d in lines if "eval_kd_accuracy" in d]

    module, labels, _, cfg = load_finetuned(run_dir)
    assert module.config.num_layers == 1 and not hasattr(module, "teacher")
    assert cfg.distill.teacher == str(teacher_run / "classifier")
    capsys.readouterr()
    assert classify_cli.main(["--checkpoint", str(run_dir), "the best film"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in labels


def test_the_distillation_loss_reads_the_loaded_teacher(teacher_run):
    """Inside the student's module the teacher computes what the teacher run computes on its
    own, and the task's sums are the labels' cross entropy and T^2 KL of the two models'
    outputs (numpy)."""
    own, labels, tokenizer_path, _ = load_finetuned(teacher_run / "classifier")
    # A sharper teacher than three epochs on 96 sentences make, for a KL well above rounding.
    own.classifier.kernel.set_value(own.classifier.kernel.get_value() * 30)
    teacher = distill.Teacher.from_module(own, "sequence_classification", labels,
                                          tokenizer_path, teacher_run / "classifier")
    student_cfg = dataclasses.replace(teacher.config, num_layers=1)  # freshly initialised
    task = distill.distillation_task(classify_task(2, 0.1), teacher,
                                     DistillOptions(alpha=0.3, temperature=1.5), student_cfg)
    mesh = sharding.make_mesh(MeshConfig(data=-1))
    setup = setup_state(student_cfg, 0, optim.make_optimizer(load(None, [], FinetuneConfig).train),
                        mesh, task, distill.student_only(nnx.Param))
    assert not any("teacher" in ".".join(map(str, k))
                   for k, _ in nnx.to_flat_state(setup.model.abstract_params))
    frozen, used = load_weights(setup.fixed.frozen, setup.fixed_shardings.frozen,
                                teacher.frozen_weights())
    assert used == set(teacher.frozen_weights())
    module = merge(setup.model, setup.init().params,
                   dataclasses.replace(setup.fixed, frozen=frozen))
    module.eval()

    tokenizer = load_tokenizer(tokenizer_path)
    texts = ["a good and funny film", "the worst , dullest hour", "best of the year", "bad"]
    _, batch, _ = encode_padded(tokenizer, texts, 16)
    batch["label"] = np.array([1, 0, 1, 0])
    inputs = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    teacher_logits = np.asarray(own(*inputs), np.float64)
    np.testing.assert_allclose(module.teacher(*inputs), teacher_logits, atol=1e-5)
    student_logits = np.asarray(module(*inputs), np.float64)
    sums = jax.device_get(task.sums(module, batch))
    ce = -_np_log_softmax(student_logits)[np.arange(4), batch["label"]]
    np.testing.assert_allclose(sums["cls_loss"], ce.sum(), rtol=1e-5)
    assert sums["kd_loss"] > 0.01  # the two models disagree
    np.testing.assert_allclose(sums["kd_loss"], _np_kd(student_logits, teacher_logits, 1.5).sum(),
                               rtol=1e-5)
    assert task.objectives == ("cls", "kd") and task.loss_weights == (0.7, 0.3)


def test_a_hugging_face_teacher_equals_the_run_it_was_exported_from(teacher_run, tmp_path):
    module, labels, tokenizer_path, cfg = load_finetuned(teacher_run / "classifier")
    hf.save_pretrained(module, module.config, tmp_path / "hf", labels)
    hf.save_tokenizer(tokenizer_path, module.config, tmp_path / "hf")
    ours, theirs = load_teacher(teacher_run / "classifier"), load_teacher(tmp_path / "hf")
    assert theirs.task == ours.task and theirs.labels == ours.labels
    assert sorted(theirs.weights) == sorted(ours.weights)
    for name, value in ours.weights.items():
        np.testing.assert_allclose(theirs.weights[name], value, atol=1e-7, err_msg=name)


def test_bad_teachers_are_named(teacher_run, tmp_path, capsys):
    teacher = teacher_run / "classifier"

    def run(*extra):
        return finetune.run(load(None, separable_overrides(teacher_run, tmp_path / "bad",
                                                  f"distill.teacher={teacher}", *extra),
                                 cls=FinetuneConfig))

    with pytest.raises(ValueError, match="distill.student_layers=3: must be between 1 and the "
                                         "teacher's 2 layers"):
        run("distill.student_layers=3")
    with pytest.raises(ConfigError, match="was fine-tuned for sequence_classification, not "
                                          "finetune.task=token_classification"):
        run("finetune.task=token_classification", "data.format=jsonl",
            f"data.train_file={_tagged(tmp_path)}")
    renamed = tmp_path / "renamed.csv"
    renamed.write_text((teacher_run / "separable.csv").read_text()
                       .replace("positive,", "good,").replace("negative,", "bad,"))
    with pytest.raises(ConfigError, match=r"its labels \['negative', 'positive'\] are not the "
                                          r"training data's \['bad', 'good'\]"):
        run(f"data.train_file={renamed}")
    other = tiny_hf_bert(tmp_path, ["quite another vocabulary entirely"] * 8, 64)
    with pytest.raises(ConfigError, match="its tokenizer .* differs from the student's"):
        run(f"init_from={other}")
    with pytest.raises(ConfigError, match="finetune.lora_rank with distill.teacher needs "
                                          "init_from"):
        run("finetune.lora_rank=4")
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        run(f"distill.teacher={tmp_path / 'nowhere'}")
    assert not (tmp_path / "bad").exists()  # nothing written before the inputs were checked
    assert finetune.main([*separable_overrides(teacher_run, tmp_path / "x"), "distill.teacher="],
                         command="distill") == 1
    assert "distill.teacher is not set" in capsys.readouterr().err


def _tagged(tmp_path):
    path = tmp_path / "tags.jsonl"
    path.write_text("".join(json.dumps({"tokens": ["a", "good", "film"], "tags": ["O", "B", "O"]})
                            + "\n" for _ in range(40)))
    return path


def _pretrain(overrides, run_dir, *extra):
    return pretrain.main([*overrides, f"run_dir={run_dir}", *extra])


@pytest.mark.slow  # end to end over 20 s on 2 cores
def test_masked_lm_distillation_end_to_end(run_overrides, tmp_path):
    """train.py with distill.teacher: a narrower one-layer BERT learns from a pretrained
    two-layer teacher's masked-LM distributions beside its own MLM and NSP labels; the loss
    is (1 - alpha) MLM + NSP + alpha KD; the checkpoint holds the student alone, which
    fill-mask loads; a resume under another teacher is refused, the run left as it was, and
    so is a teacher with another vocabulary."""
    assert _pretrain(run_overrides, tmp_path / "teacher", "train.steps=3") == 0
    student = ["model.num_layers=1", "model.hidden_size=16", "model.intermediate_size=32",
               "distill.alpha=0.7", "train.steps=4"]
    run_dir = tmp_path / "student"
    assert _pretrain(run_overrides, run_dir, *student,
                     f"distill.teacher={tmp_path / 'teacher'}") == 0
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [d for d in lines if "kd_loss" in d]
    assert len(train) == 4 and all(0 <= d["kd_accuracy"] <= 1 for d in train)
    assert all(np.isclose(d["loss"], 0.3 * d["mlm_loss"] + d["nsp_loss"] + 0.7 * d["kd_loss"],
                          rtol=1e-5) for d in train)
    module, cfg, _ = load_for_inference(run_dir)
    assert module.config.hidden_size == 16 and not hasattr(module, "teacher")
    assert cfg.distill.teacher == str(tmp_path / "teacher")
    assert fill_mask_cli.main(["--checkpoint", str(run_dir), "ka [MASK] lo"]) == 0

    assert _pretrain(run_overrides, tmp_path / "other", "train.steps=3", "train.seed=1") == 0
    before = _digest(run_dir / "checkpoints")
    with pytest.raises(ConfigError, match="other frozen weights .*teacher.fingerprint"):
        pretrain.run(pretrain.parse_args([*run_overrides, f"run_dir={run_dir}", *student,
                                          "train.steps=6",
                                          f"distill.teacher={tmp_path / 'other'}"]))
    assert _digest(run_dir / "checkpoints") == before
    with pytest.raises(ConfigError, match="tokenizer .* differs from the student's"):
        pretrain.run(pretrain.parse_args([*run_overrides, f"run_dir={tmp_path / 'other_vocab'}",
                                          "data.vocab_size=150",
                                          f"distill.teacher={tmp_path / 'teacher'}"]))
    assert not (tmp_path / "other_vocab").exists()
    with pytest.raises(ConfigError, match="a pretraining student is `model`"):
        load(None, [f"distill.teacher={tmp_path / 'teacher'}", "distill.student_layers=1"])


def test_a_masked_lm_teacher_must_be_a_pretrained_bert(run_overrides, teacher_run, tmp_path):
    with pytest.raises(ConfigError, match="distill.teacher: .* is a fine-tuned model"):
        pretrain.run(pretrain.parse_args([*run_overrides, f"run_dir={tmp_path / 'student'}",
                                          f"distill.teacher={teacher_run / 'classifier'}"]))
    assert not (tmp_path / "student").exists()
