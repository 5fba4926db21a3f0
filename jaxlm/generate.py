"""`python -m jaxlm.generate --checkpoint RUN --prompt TEXT`: continue prompts with a trained
GPT (greedy or sampled, `jaxlm.inference.generate`) or decode sources with a trained
encoder-decoder (beam search, `jaxlm.inference.beam_search`).

    python -m jaxlm.generate --checkpoint runs/gpt_tiny --prompt "to be or not" \
        --max-new-tokens 40 --temperature 0.8 --top-k 40 --top-p 0.95 --seed 0
    python -m jaxlm.generate --checkpoint runs/reverse --prompt "my lord" --beam-size 4
"""

from __future__ import annotations

import argparse
import logging
import sys

from jaxlm.data import load_tokenizer
from jaxlm.inference.beam_search import beam_search
from jaxlm.inference.generate import Sampling, decode_text, encode_sources, generate
from jaxlm.inference.load import load_run
from jaxlm.training.host import cache_compilations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxlm.generate",
        description="Continue prompts with a trained GPT, or decode sources with a trained "
                    "encoder-decoder (beam search).")
    parser.add_argument("--checkpoint", required=True,
                        help="a run directory written by train.py (model.kind gpt or "
                             "encoder_decoder)")
    parser.add_argument("--prompt", action="append", required=True,
                        help="text to continue (GPT) or source to decode; repeat for a batch")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--temperature", type=float, default=0.0, help="GPT: 0 = greedy")
    parser.add_argument("--top-k", type=int, default=0, help="GPT: 0 = no top-k filter")
    parser.add_argument("--top-p", type=float, default=1.0, help="GPT: 1 = no nucleus filter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--beam-size", type=int, default=4, help="encoder-decoder: 1 = greedy")
    parser.add_argument("--length-penalty", type=float, default=0.6,
                        help="encoder-decoder: GNMT alpha, 0 = none")
    args = parser.parse_args(argv)
    cache_compilations()
    logging.basicConfig(level=logging.WARNING)
    try:
        sampling = Sampling(args.temperature, args.top_k, args.top_p)
        model, cfg, tokenizer_path = load_run(args.checkpoint, ("gpt", "encoder_decoder"),
                                              "generation")
        tokenizer = load_tokenizer(tokenizer_path)
        sep, pad = tokenizer.token_to_id("[SEP]"), tokenizer.token_to_id("[PAD]")
        if cfg.model.kind == "gpt":
            prompts = [tokenizer.encode(p, add_special_tokens=False).ids for p in args.prompt]
            outputs = generate(model, prompts, args.max_new_tokens, sampling=sampling,
                               seed=args.seed, pad_id=pad, stop_id=sep)
        else:
            source, mask = encode_sources(tokenizer, args.prompt, cfg)
            outputs = [ids for ids, _ in beam_search(
                model, source, mask, args.max_new_tokens, beam_size=args.beam_size,
                length_penalty=args.length_penalty, start_id=tokenizer.token_to_id("[CLS]"),
                end_id=sep)]
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for prompt, ids in zip(args.prompt, outputs, strict=True):
        print(f"{prompt} >>> {decode_text(tokenizer, ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
