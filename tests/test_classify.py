"""The classify command line on a fine-tuned run (trained once, tiny)."""

import pytest

from jaxlm import classify as classify_cli
from jaxlm.inference import classify


def test_command_line_errors_are_named(tmp_path, capsys):
    assert classify_cli.main(["--checkpoint", str(tmp_path / "none"), "good"]) == 1
    assert "no checkpoint found" in capsys.readouterr().err
    assert classify_cli.main(["--checkpoint", str(tmp_path), "--file",
                          str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt not found" in capsys.readouterr().err
    assert classify_cli.main(["--checkpoint", str(tmp_path)]) == 1
    assert "no texts given" in capsys.readouterr().err


def test_empty_text_is_an_error():
    with pytest.raises(ValueError, match="text 2 is empty"):
        classify.classify(None, None, ("a", "b"), ["fine", "  "], 16)
