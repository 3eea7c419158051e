"""Flax models (T5, Llama/Qwen2 decoder LMs), LoRA, and Hugging Face import/export.

Calling conventions (full forward, prefill/decode with ``DecodeCache``) are documented in
``kid.models.decoder`` and ``kid.models.t5``; both families share them.
"""

from kid.models.build import build, init, is_encoder_decoder, param_axes, shardings, with_lora
from kid.models.cache import DecodeCache
from kid.models.configs import CONFIGS, DecoderConfig, T5Config, get_config
from kid.models.lora import LoRAConfig

__all__ = [
    "CONFIGS",
    "DecodeCache",
    "DecoderConfig",
    "LoRAConfig",
    "T5Config",
    "build",
    "get_config",
    "init",
    "is_encoder_decoder",
    "param_axes",
    "shardings",
    "with_lora",
]
