"""Preparation benchmark: MB of text per second and peak memory, local path against Beam.

    python -m benchmarks.prepare --megabytes 50 200 --workers 1 2

The corpus is the default one (Shakespeare) copied until it holds the asked-for size, each
copy's documents under their own first line ("copy 17"), so that no two documents are equal:
the figure is throughput, not quality. It is split into files of about 10 MB, as a real
corpus is sharded (the Beam pipeline tokenizes one file per work item). Each run is a child
process (`python -m jaxlm.prepare`) with BERT's settings at T=128 and `--dupe-factor`
passes (default 1: the figure is mostly tokenization; BERT's 10 multiply the instances); its
wall time, the manifest's timing and the peak resident memory of its largest process (the
launcher or any Beam worker) are reported. The
last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT
from jaxlm.data.corpus import fetch_shakespeare, read_documents

FILE_BYTES = 10 << 20
SETTINGS = ["data.tokenizer_sample_lines=100000"]


def make_corpus(megabytes: int, directory: Path, cache_dir: str) -> list[Path]:
    """Shakespeare, copied under distinct document ids into ~10 MB files, `megabytes` MB."""
    documents = list(read_documents([fetch_shakespeare(cache_dir)]))
    files, written, copy = [], 0, 0
    out = None
    while written < megabytes << 20:
        for document in documents:
            if written >= megabytes << 20:
                break
            if out is None or out.tell() >= FILE_BYTES:
                if out is not None:
                    out.close()
                files.append(directory / f"part-{len(files):04d}.txt")
                out = open(files[-1], "w", encoding="utf-8")
            text = f"copy {copy}\n" + "\n".join(document) + "\n\n"
            out.write(text)
            written += len(text.encode("utf-8"))
        copy += 1
    out.close()
    return files


def run(files: list[Path], output_dir: Path, extra: list[str], dupe_factor: int) -> dict:
    """One `python -m jaxlm.prepare` child: wall seconds, the manifest's timing and the peak
    RSS (MiB) of the largest process it ran (wait4's rusage covers the child's waited-for
    descendants, Beam's workers among them)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "jaxlm.prepare",
             f"data.train_files=[{','.join(map(str, files))}]", f"data.output_dir={output_dir}",
             *SETTINGS, f"data.dupe_factor={dupe_factor}", *extra],
            cwd=ROOT, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(err.read()[-3000:])
        summary = json.loads(out.read())
    return {"wall_s": round(seconds, 2), "timing": summary["timing"],
            "instances": summary["splits"]["train"]["num_instances"],
            "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prepare",
                                     description="preparation MB/s and peak RSS")
    parser.add_argument("--megabytes", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dupe-factor", type=int, default=1,
                        help="passes of instance building over the documents (BERT: 10)")
    parser.add_argument("--ways", nargs="+", default=["local", "beam"])
    parser.add_argument("--cache-dir", default="~/.cache/jaxlm")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = {"settings": [*SETTINGS, f"data.dupe_factor={args.dupe_factor}"], "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for megabytes in sorted(args.megabytes):
            corpus = Path(tmp) / f"corpus-{megabytes}"
            corpus.mkdir()
            files = make_corpus(megabytes, corpus, args.cache_dir)
            size = sum(f.stat().st_size for f in files) / 2**20
            ways = [(f"local, {w} workers", [f"data.num_workers={w}"]) for w in args.workers
                    if "local" in args.ways]
            ways += [(f"beam, {w} workers", [
                "--runner", "DirectRunner", f"--direct_num_workers={w}",
                "--direct_running_mode=multi_processing"]) for w in args.workers
                if "beam" in args.ways]
            for name, extra in ways:
                result = run(files, Path(tmp) / f"out-{len(report['runs'])}", extra,
                             args.dupe_factor)
                result.update(way=name, megabytes=round(size, 1),
                              mb_per_s=round(size / result["wall_s"], 2))
                report["runs"].append(result)
                print(f"{size:.0f} MB, {name}: {result['wall_s']:.1f} s "
                      f"({result['mb_per_s']:.2f} MB/s), peak RSS {result['peak_rss_mib']} MiB",
                      flush=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
