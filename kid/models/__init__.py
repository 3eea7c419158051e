"""Flax models (T5, Llama/Qwen2 decoder LMs), LoRA, and Hugging Face import/export.

Calling conventions (full forward, prefill/decode with ``DecodeCache``) are documented in
``kid.models.decoder`` and ``kid.models.t5``; both families share them.
"""

from kid.models.build import build, init, is_encoder_decoder, param_axes, shardings, with_lora
from kid.models.cache import DecodeCache
from kid.models.configs import (
    CONFIGS,
    DecoderConfig,
    T5Config,
    check_tokenizer_agrees,
    for_tokenizer,
    get_config,
)
from kid.models.hf import load_hf, save_hf
from kid.models.lora import LoRAConfig
from kid.models.lora import merge as merge_lora
from kid.models.stack import scan_params, unscan_params
from kid.models.vocab import resize_vocab

__all__ = [
    "CONFIGS",
    "DecodeCache",
    "DecoderConfig",
    "LoRAConfig",
    "T5Config",
    "build",
    "check_tokenizer_agrees",
    "for_tokenizer",
    "get_config",
    "init",
    "is_encoder_decoder",
    "load_hf",
    "merge_lora",
    "param_axes",
    "resize_vocab",
    "save_hf",
    "scan_params",
    "shardings",
    "unscan_params",
    "with_lora",
]
