"""The accelerator check's code path on tiny shapes (it is run for real on a lent GPU)."""

import pytest

from benchmarks import device_check

pytest.importorskip("transformers")


@pytest.mark.slow  # four benchmark processes, about a minute and a half on 2 cores
def test_quick_device_check_writes_its_tables(tmp_path):
    assert device_check.main(["--quick", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "device_check.md").read_text()
    assert "| B=4 T=16 |" in table
    for impl in device_check.IMPLS:
        assert f"| {impl} (B=2 T=32) |" in table
    assert table.strip().splitlines()[-1].startswith("| 4 | 1 |")
    assert {p.name for p in tmp_path.iterdir()} >= {"bert.json", "generate.json",
                                                     "device_check.md"}
