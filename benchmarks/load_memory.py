"""Peak host memory of ``kid.models.load_hf`` on a checkpoint many times its largest tensor.

Writes a synthetic float32 Llama checkpoint (numpy, no download), then loads it in fresh
subprocesses and prints each loader's peak resident memory above the process's baseline
(jax imported, backend started):

- ``load_hf``: kid's streaming loader (one tensor read, converted and placed at a time);
- ``whole-file``: the naive alternative, reading every tensor first (safetensors'
  ``load_file``), then converting and placing them.

On CPU the loaded parameters themselves live in host memory, so a streaming loader peaks at
about one checkpoint (the parameters) plus a few copies of the largest tensor; the naive one
at about two checkpoints.

    python benchmarks/load_memory.py [--layers 8 --hidden 512 --vocab 8192]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile

import numpy as np
import psutil
from safetensors.numpy import save_file

MB = 2**20


def write_checkpoint(directory: pathlib.Path, layers: int, hidden: int, vocab: int) -> dict:
    """A random Llama checkpoint; returns its config.json dict."""
    mlp = hidden * 11 // 4
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": mlp,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 64,
        "num_key_value_heads": hidden // 64,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    }
    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    tensors = {
        "model.embed_tokens.weight": w(vocab, hidden),
        "lm_head.weight": w(vocab, hidden),
        "model.norm.weight": w(hidden),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {p + f"self_attn.{n}_proj.weight": w(hidden, hidden) for n in "qkvo"}
        tensors |= {
            p + "mlp.gate_proj.weight": w(mlp, hidden),
            p + "mlp.up_proj.weight": w(mlp, hidden),
            p + "mlp.down_proj.weight": w(hidden, mlp),
            p + "input_layernorm.weight": w(hidden),
            p + "post_attention_layernorm.weight": w(hidden),
        }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    return {
        "largest_tensor": max(t.nbytes for t in tensors.values()),
        "checkpoint": (directory / "model.safetensors").stat().st_size,
    }


def _child(mode: str, directory: str) -> None:
    """Runs in a subprocess: load and print the peak RSS increase in bytes."""
    import jax
    import jax.numpy as jnp

    from kid import models

    jnp.zeros(1).block_until_ready()
    baseline = psutil.Process().memory_info().rss
    if mode == "load_hf":
        _, params = models.load_hf(directory)
    else:
        from flax import traverse_util
        from safetensors.numpy import load_file

        from kid.models import hf

        module = models.build(hf.config_from_hf(json.load(open(f"{directory}/config.json"))))
        tensors = load_file(f"{directory}/model.safetensors")
        shapes, _ = models.param_axes(module)
        flat = {}
        for key, shape in traverse_util.flatten_dict(shapes).items():
            (name,) = hf._hf_names(module.config, key)
            flat[key] = jax.device_put(hf._from_hf(key, tensors[name], shape.shape))
        params = traverse_util.unflatten_dict(flat)
    jax.block_until_ready(params)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB.
    print(
        json.dumps(
            {
                "peak_increase": peak - baseline,
                "params": sum(x.nbytes for x in jax.tree.leaves(params)),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=8192)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = write_checkpoint(pathlib.Path(tmp), args.layers, args.hidden, args.vocab)
        print(
            f"checkpoint {sizes['checkpoint'] / MB:.1f} MiB, largest tensor "
            f"{sizes['largest_tensor'] / MB:.1f} MiB "
            f"({sizes['checkpoint'] / sizes['largest_tensor']:.1f}x)"
        )
        print(
            f"{'loader':<12} {'params MiB':>10} {'peak RSS above baseline MiB':>28} "
            f"{'/ checkpoint':>12}"
        )
        for mode in ("load_hf", "whole-file"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, tmp],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{mode:<12} {result['params'] / MB:>10.1f} "
                f"{result['peak_increase'] / MB:>28.1f} "
                f"{result['peak_increase'] / sizes['checkpoint']:>12.2f}"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
    else:
        main()
