"""benchmarks.prepare end to end on 1 MB of the default corpus, one worker each way."""

import json

from benchmarks import prepare as prepare_bench


def test_both_ways_report_throughput_and_memory(capsys, tmp_path):
    files = prepare_bench.make_corpus(1, tmp_path, "~/.cache/jaxlm")
    text = "".join(f.read_text() for f in files)
    assert 1 << 20 <= len(text.encode()) < 1.2 * (1 << 20)
    assert text.startswith("copy 0\n")
    prepare_bench.main(["--megabytes", "1", "--workers", "1"])
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [r["way"] for r in report["runs"]] == ["local, 1 workers", "beam, 1 workers"]
    runs = report["runs"]
    assert runs[0]["instances"] == runs[1]["instances"] > 0
    assert all(r["mb_per_s"] > 0 and r["peak_rss_mib"] > 50 for r in runs)
