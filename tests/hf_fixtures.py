"""Tiny random transformers (PyTorch) models for parity tests, with weights scaled so logits
are far from uniform, saved as Hugging Face checkpoint directories."""

from __future__ import annotations

import pathlib

import numpy as np
import torch
import transformers

VOCAB = 96

CASES = {
    # T5 v1.0: ReLU, tied embeddings, logits rescaled by d_model**-0.5.
    "t5_v1_0": lambda: transformers.T5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        dropout_rate=0.0,
        feed_forward_proj="relu",
    ),
    # T5 v1.1 / Flan: gated-GELU, untied head, no rescale, more decoder than encoder layers.
    "t5_v1_1": lambda: transformers.T5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=3,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    ),
    # Llama, tied embeddings, multi-query attention.
    "llama_tied": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        rope_theta=500.0,
        rms_norm_eps=1e-5,
    ),
    # Llama, untied head, full multi-head attention.
    "llama_untied": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    ),
    # Qwen2: q/k/v bias, grouped-query attention (4 heads share 2 kv heads).
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        rope_theta=10000.0,
    ),
}


def is_t5(name: str) -> bool:
    return name.startswith("t5")


def torch_model(name: str, seed: int = 0):
    """A transformers model of case ``name`` with large random weights, in eval mode."""
    config = CASES[name]()
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    if is_t5(name):
        model = transformers.T5ForConditionalGeneration(config)
    else:
        model = transformers.AutoModelForCausalLM.from_config(config)
    if name == "t5_v1_1":  # transformers 5 ties T5's head on construction; untie it.
        model.lm_head.weight = torch.nn.Parameter(torch.empty(VOCAB, config.d_model))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in param_name:
                param.copy_(1.0 + 0.2 * noise)
            elif param.ndim == 1:  # Biases.
                param.copy_(0.5 * noise)
            elif "relative" in param_name:
                param.copy_(noise)
            elif "shared" in param_name or "embed" in param_name:
                param.copy_(3.0 * noise)
            else:
                gain = 4.0 if "lm_head" in param_name else 1.5
                param.copy_(gain * noise / np.sqrt(param.shape[1]))
    return model.eval()


def save_checkpoint(name: str, directory: pathlib.Path):
    model = torch_model(name)
    model.save_pretrained(directory)
    return model


def batch(name: str) -> dict[str, np.ndarray]:
    """A padded batch: right-padded encoder inputs for T5, left-padded prompts otherwise."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, VOCAB, size=(3, 9))
    lengths = np.array([9, 6, 3])
    if is_t5(name):
        mask = np.arange(9)[None] < lengths[:, None]
        decoder_ids = rng.integers(3, VOCAB, size=(3, 6))
        decoder_ids[:, 0] = 0
        decoder_mask = np.arange(6)[None] < np.array([6, 6, 4])[:, None]
        return dict(
            input_ids=np.where(mask, ids, 0),
            attention_mask=mask.astype(np.int64),
            decoder_input_ids=decoder_ids,
            decoder_attention_mask=decoder_mask.astype(np.int64),
        )
    mask = np.arange(9)[None] >= 9 - lengths[:, None]
    return dict(input_ids=np.where(mask, ids, 0), attention_mask=mask.astype(np.int64))


def torch_logits(model, name: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Reference logits; decoder-only models get positions cumsum(mask) - 1 like kid."""
    kwargs = {k: torch.from_numpy(v) for k, v in inputs.items()}
    if not is_t5(name):
        mask = kwargs["attention_mask"]
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(**kwargs).logits.numpy()


def real_positions(name: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Where logits are meaningful: real tokens (decoder positions for T5)."""
    key = "decoder_attention_mask" if is_t5(name) else "attention_mask"
    return inputs[key].astype(bool)
