"""The memory benchmark reads XLA's bytes per device of the compiled step on each mesh."""

import pytest

from benchmarks import memory


@pytest.mark.slow  # XLA compiles the step twice, about 30 s
def test_fsdp_needs_fewer_bytes_per_device_than_data_parallel(tiny_config):
    report = memory.memory(tiny_config, batch_size=8, seq_len=16, meshes=["data=8", "fsdp=8"])
    data, fsdp = report["meshes"]["data=8"], report["meshes"]["fsdp=8"]
    assert fsdp["arguments"] < data["arguments"] / 4  # params and AdamW moments in 8 shards
    assert fsdp["total"] < data["total"]
    assert "fsdp=8" in memory.memory_table(report)
    with pytest.raises(ValueError, match="cannot read 'fsdp'"):
        memory.parse_mesh("fsdp")
