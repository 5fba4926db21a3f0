"""Post-training int8 quantization of a trained run: `python -m jaxlm.quantize`.

    python -m jaxlm.quantize --checkpoint runs/classify --out runs/classify_int8
    python -m jaxlm.quantize --checkpoint runs/gpt_tiny --out runs/gpt_tiny_w8a8 --activations

Writes DIR/model.safetensors (int8 weights, a float32 scale per output channel, the rest in
float32; `jaxlm.compression.quantize`), DIR/quantized.json (the run's config and the mode)
and DIR/tokenizer.json. `jaxlm.classify`, `tag`, `answer`, `fill_mask` and `generate` take
DIR as their --checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

from flax import nnx

from jaxlm.compression import quantize
from jaxlm.config import to_dict
from jaxlm.inference.load import load_finetuned, load_for_inference, run_tokenizer
from jaxlm.training.checkpoint import open_latest
from jaxlm.training.state import count_params


def quantize_run(run_dir: str | Path, out: str | Path, activations: bool = False) -> dict:
    """Quantizes the run's served checkpoint (a fine-tuned run's best, a pretraining run's
    newest) into `out`.

    Returns:
      {"out", "mode", "float32_bytes", "quantized_bytes"}.

    Raises:
      FileExistsError: `out` exists and is not an empty directory (nothing is overwritten).
      FileNotFoundError, ValueError: no readable run at `run_dir`.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory; give a new --out")
    manager, _, saved = open_latest(run_dir)
    manager.close()
    if "labels" in saved:
        module, labels, tokenizer_path, cfg = load_finetuned(run_dir)
        run = {**to_dict(cfg), "labels": list(labels)}
    else:
        module, cfg, _ = load_for_inference(run_dir)
        tokenizer_path, run = run_tokenizer(run_dir, "train.py"), to_dict(cfg)
    # LoRA adapters are merged into the int8 kernels: the saved model has none.
    run["model"] = dataclasses.asdict(dataclasses.replace(module.config, lora_rank=0))
    float32_bytes = 4 * count_params(nnx.state(module, nnx.Param))
    mode = "w8a8" if activations else "int8"
    quantize.quantize(module, activations)
    directory = quantize.save(module, out, {"mode": mode, "source": str(Path(run_dir).absolute()),
                                            "run": run})
    shutil.copyfile(tokenizer_path, directory / "tokenizer.json")
    return {"out": str(directory), "mode": mode, "float32_bytes": float32_bytes,
            "quantized_bytes": (directory / "model.safetensors").stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.quantize", description=(
        "Quantize a trained jaxlm run to int8 for inference (weights, or with --activations "
        "weights and activations)."))
    parser.add_argument("--checkpoint", required=True, help="a jaxlm run directory")
    parser.add_argument("--out", required=True, help="a new directory to write")
    parser.add_argument("--activations", action="store_true",
                        help="w8a8: int8 activations (per row) and int8 x int8 products")
    args = parser.parse_args(argv)
    try:
        report = quantize_run(args.checkpoint, args.out, args.activations)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{report['out']}: {report['mode']}, {report['quantized_bytes'] / 2**20:.1f} MiB "
          f"(float32: {report['float32_bytes'] / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
