"""Decoding throughput: kid's jitted generate vs transformers' PyTorch generate, same weights.

On-policy KD methods decode inside every training step, so generation speed bounds their
cost. This script builds a tiny model (a kid preset), writes its weights with save_hf, loads
them into transformers, and times greedy decoding of the same left-padded (decoder-only) or
right-padded (T5) prompts in both, in one process on this machine's CPU. EOS is disabled so
both produce exactly --new-tokens tokens per row; the script checks the tokens agree.

    PYTHONPATH=. python benchmarks/decoding.py [--model qwen2-tiny] [--batch 32] \\
        [--new-tokens 64] [--prompt-len 32] [--repeats 7]

Prints tokens/s for each (transformers with one torch thread and with torch's default), the
speed-up over the faster transformers run, and kid's compile time (reported separately, not
included in tokens/s).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

from kid import decoding, models


def random_prompts(batch: int, length: int, vocab: int, left: bool, seed: int = 0):
    """[batch, length] ids and mask, rows of varying length padded on one side."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(length // 2, length + 1, size=batch)
    columns = np.arange(length)[None]
    mask = columns >= length - lengths[:, None] if left else columns < lengths[:, None]
    ids = np.where(mask, rng.integers(3, vocab, size=(batch, length)), 0)
    return ids.astype(np.int32), mask.astype(np.int32)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2-tiny", help="a kid.models preset name")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    module = models.build(models.get_config(args.model))
    params = models.init(module, jax.random.key(0))
    encoder_decoder = models.is_encoder_decoder(module)
    ids, mask = random_prompts(
        args.batch, args.prompt_len, module.config.vocab_size, left=not encoder_decoder
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = models.save_hf(module, params, f"{tmp}/model")
        auto = (
            transformers.AutoModelForSeq2SeqLM
            if encoder_decoder
            else transformers.AutoModelForCausalLM
        )
        hf = auto.from_pretrained(path).eval()
    hf.generation_config.eos_token_id = None  # decode every row to --new-tokens

    run = jax.jit(
        functools.partial(decoding.generate, module, max_new_tokens=args.new_tokens, eos_id=-1)
    )
    start = time.perf_counter()
    compiled = run.lower(params, ids, mask).compile()
    compile_s = time.perf_counter() - start

    def kid_generate():
        return np.asarray(compiled(params, ids, mask).tokens)

    def hf_generate(threads: int):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            tokens = hf.generate(
                input_ids=torch.from_numpy(ids).long(),
                attention_mask=torch.from_numpy(mask).long(),
                do_sample=False,
                max_new_tokens=args.new_tokens,
                pad_token_id=0,
            ).numpy()
        return tokens[:, 1:] if encoder_decoder else tokens[:, args.prompt_len :]

    # Warm up, check agreement, then interleave the timed runs so that both see the same load
    # on a shared machine. transformers runs with one thread and with torch's default.
    default_threads = torch.get_num_threads()
    thread_counts = sorted({1, default_threads})
    agree = (kid_generate() == hf_generate(default_threads)).all(axis=1).mean()
    times = {"kid": [], **{t: [] for t in thread_counts}}
    for _ in range(args.repeats):
        times["kid"].append(seconds(kid_generate))
        for t in thread_counts:
            times[t].append(seconds(functools.partial(hf_generate, t)))
    kid_s = statistics.median(times["kid"])
    hf_s = {t: statistics.median(times[t]) for t in thread_counts}

    generated = args.batch * args.new_tokens
    print(
        f"{args.model}: batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new "
        f"tokens, greedy, {jax.devices()[0].platform.upper()}, median of {args.repeats}"
    )
    print(
        f"  kid generate (jit)            {generated / kid_s:9.0f} tokens/s  ({kid_s * 1e3:.1f} ms)"
    )
    for t, s in hf_s.items():
        print(
            f"  transformers, {t} torch thread(s) {generated / s:9.0f} tokens/s  ({s * 1e3:.1f} ms)"
        )
    print(f"  speed-up, transformers default threads  {hf_s[default_threads] / kid_s:5.1f}x")
    print(f"  speed-up, transformers fastest setting  {min(hf_s.values()) / kid_s:5.1f}x")
    print(f"  kid compile time              {compile_s:9.2f} s (once per shape; not in tokens/s)")
    print(f"  rows with identical tokens    {agree:9.0%}")


if __name__ == "__main__":
    main()
