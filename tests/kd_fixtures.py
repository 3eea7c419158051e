"""Tiny models and batches of both layouts for the forward, imperfect and methods tests."""

from __future__ import annotations

import dataclasses

import numpy as np
from model_helpers import random_params

from kid import models
from kid.data import batching

PAD, EOS, START = 0, 2, 0
FAMILIES = ("t5", "decoder")
PRESETS = {"t5": "t5v1_1-tiny", "decoder": "qwen2-tiny"}


def tiny_module(family: str, **overrides):
    """A tiny model of a family with eos/pad as the batches below use them."""
    config = models.get_config(PRESETS[family], **overrides)
    if family == "t5":
        config = dataclasses.replace(config, eos_token_id=EOS, pad_token_id=PAD)
    else:
        config = dataclasses.replace(config, eos_token_id=EOS, pad_token_id=PAD)
    return models.build(config)


def tiny_variables(module, seed: int = 0, scale: float = 0.3) -> dict:
    return {"params": random_params(module, seed=seed, scale=scale)}


def random_rows(
    seed: int, batch: int = 3, vocab: int = 128, max_prompt: int = 6, max_target: int = 7
):
    """Prompts and EOS-terminated targets of different lengths (ids avoid PAD and EOS)."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, vocab, rng.integers(2, max_prompt + 1)) for _ in range(batch)]
    targets = [
        np.append(rng.integers(3, vocab, rng.integers(1, max_target)), EOS) for _ in range(batch)
    ]
    return prompts, targets


def make_batch(family: str, prompts, targets, *, weights=None, prompt_len=8, target_len=8):
    """A ``kid.data.batching`` batch of the family's layout, as numpy arrays."""
    weights = np.ones(len(prompts)) if weights is None else np.asarray(weights)
    index = np.arange(len(prompts))
    if family == "t5":
        return batching.encoder_decoder_batch(
            prompts,
            targets,
            weights,
            index,
            prompt_len=prompt_len,
            target_len=target_len,
            pad_id=PAD,
            decoder_start_id=START,
        )
    return batching.decoder_only_batch(
        prompts, targets, weights, index, prompt_len=prompt_len, target_len=target_len, pad_id=PAD
    )
