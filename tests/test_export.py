"""`python -m jaxlm.export`: a run into a Hugging Face directory, never over other files."""

import stat

import pytest
from test_pretrain import _run

from jaxlm import export

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert_run(run_overrides, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bert_run")
    _run(run_overrides, run_dir, "train.steps=1", "model.qk_norm=false")
    return run_dir


def test_export_refuses_a_non_empty_directory(bert_run, tmp_path, capsys):
    out = tmp_path / "hf"
    assert export.main(["--checkpoint", str(bert_run), "--out", str(out)]) == 0
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o644
    (out / "pytorch_model.bin").write_bytes(b"stale weights of another model")
    assert export.main(["--checkpoint", str(bert_run), "--out", str(out)]) == 1
    assert f"{out} is not empty" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".bin"} == written
    assert export.main(["--checkpoint", str(bert_run), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "pytorch_model.bin").exists()  # transformers would load it otherwise
    assert {p.name for p in out.iterdir()} == set(written)
    transformers.BertForPreTraining.from_pretrained(out)


def test_export_onto_a_file_is_refused(bert_run, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert export.main(["--checkpoint", str(bert_run), "--out", str(target)]) == 1
    assert f"{target} is a file" in capsys.readouterr().err
    assert target.read_text() == "mine"
