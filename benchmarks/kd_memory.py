"""Compiled temporary memory of one KID training step: full-sequence vs target-only logits.

A decoder-only batch holds a long prompt (P columns) and a short target (T columns); only
the T target logits enter a KD loss. ``kid.models.forward`` slices the hidden states to the
target columns before the output head; the naive alternative computes [B, P + T, V] logits
for student and teacher and the losses over the whole layout with its loss mask. This script compiles the same KID step (student forward + backward,
teacher forward, the no-gradient predict pass, AdamW update) both ways and prints XLA's
temporary buffer size for each (``compiled.memory_analysis()``), plus the size of one
fp32 logits array of each shape for scale.

    python benchmarks/kd_memory.py [--batch 8 --prompt 512 --target 64 --vocab 32000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kid import methods, models
from kid.data import batching
from kid.models import forward as fwd

GIB = 2**30


@contextlib.contextmanager
def full_sequence_logits():
    """The naive KD step: student and teacher logits at all P + T columns, the losses over
    the whole [B, P + T] layout with its loss mask (the prompt columns weigh 0)."""

    def student(variables, batch, rng, cfg):
        del rng
        return fwd.forward(cfg.student, variables, batch, logits_at="all")

    def teacher(frozen, batch, cfg):
        teacher_variables = jax.lax.stop_gradient(frozen["teacher"])
        return fwd.forward(cfg.teacher, teacher_variables, batch, logits_at="all")

    with (
        mock.patch.object(methods, "_student_logits", student),
        mock.patch.object(methods, "_teacher_logits", teacher),
        mock.patch.object(fwd, "targets_and_mask", lambda b: (b["targets"], b["loss_mask"])),
    ):
        yield


def kid_step(cfg: methods.KDConfig):
    loss_fn = methods.loss_fn(cfg)
    optimizer = optax.adamw(1e-4)

    def step(params, opt_state, frozen, batch, rng):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, frozen, batch, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, optimizer


def temp_bytes(step, *args) -> int:
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--target", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--out", help="also write the figures as JSON")
    args = parser.parse_args()

    def model(hidden, layers):
        return models.build(
            models.get_config(
                "qwen2-tiny",
                vocab_size=args.vocab,
                hidden_size=hidden,
                intermediate_size=2 * hidden,
                num_hidden_layers=layers,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=hidden // 4,
            )
        )

    student, teacher = model(args.hidden, args.layers), model(2 * args.hidden, args.layers)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, args.vocab, args.prompt) for _ in range(args.batch)]
    targets = [
        np.append(rng.integers(3, args.vocab, args.target - 1), 2) for _ in range(args.batch)
    ]
    batch = batching.decoder_only_batch(
        prompts,
        targets,
        np.ones(args.batch),
        np.arange(args.batch),
        prompt_len=args.prompt,
        target_len=args.target,
        pad_id=0,
    )
    shapes = lambda m: models.param_axes(m)[0]  # noqa: E731
    params, teacher_params = shapes(student), shapes(teacher)
    cfg = methods.KDConfig(
        method="kid",
        student=student,
        teacher=teacher,
        vocab_size=args.vocab - 1,
        mask_id=args.vocab - 1,
        eos_id=2,
    )
    step, optimizer = kid_step(cfg)
    opt_state = jax.eval_shape(optimizer.init, params)
    frozen = {"student": {}, "teacher": {"params": teacher_params}}
    call = (params, opt_state, frozen, jax.tree.map(jnp.asarray, batch), jax.random.key(0))

    targets_only = temp_bytes(step, *call)
    with full_sequence_logits():  # a new step function: jit caches traces per function
        full = temp_bytes(kid_step(cfg)[0], *call)
    logits_gib = {
        "full": args.batch * (args.prompt + args.target) * args.vocab * 4 / GIB,
        "targets": args.batch * args.target * args.vocab * 4 / GIB,
    }
    result = {
        "shape": vars(args),
        "temp_gib": {"full_sequence_logits": full / GIB, "target_logits": targets_only / GIB},
        "ratio": full / targets_only,
        "one_fp32_logits_array_gib": logits_gib,
    }
    print(
        f"KID step, batch {args.batch}, prompt {args.prompt}, target {args.target}, "
        f"vocab {args.vocab}:\n"
        f"  full-sequence logits: {full / GIB:7.3f} GiB temporary\n"
        f"  target-only logits:   {targets_only / GIB:7.3f} GiB temporary\n"
        f"  ratio {full / targets_only:.2f}x  (one fp32 logits array: "
        f"{logits_gib['full']:.3f} vs {logits_gib['targets']:.3f} GiB)"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
