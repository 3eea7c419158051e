"""Jitted autoregressive decoding: sampling, beam search, forced and teacher-guided decoding.

Evaluation decodes every dev example at every checkpoint, and the on-policy KD methods (GKD,
ImitKD, f-distill, SKD) and KID's cascade rewrite decode inside training steps. So decoding is
one compiled XLA loop over a KV cache, with no host callbacks and no Python branching on traced
values: it runs inside an outer `jax.jit` under a mesh.

The core functions are model-agnostic, in the style of t5x's `decoding.py`. They take the logits
for the first new token, a cache pytree, and a step function

    tokens_to_logits(tokens, cache, step) -> (logits, cache)

that feeds `tokens` [batch] (the token chosen at `step`, counted from 0 over the new tokens) to
the model and returns the logits [batch, vocab] for the token at `step + 1`. For example, a
bigram model with a constant "cache":

    table = jnp.log(jnp.array([[0.1, 0.9], [0.8, 0.2]]))   # [vocab, vocab]
    step = lambda tokens, cache, i: (table[tokens], cache)
    out = sample(table[jnp.array([0])], (), step, max_new_tokens=3)
    out.tokens  # [[1, 0, 1]]

Rows finish independently: once a row emits `eos_id` (one token or several), the following
positions hold `pad_id` and log-probability 0, and the loop exits early when every row has
finished. A `select` may hold a row open: under forced decoding a row ends at EOS only at or
after its last forced position, so every forced token is kept.
"""

from kid.decoding.beam import BeamSearchResult, beam_search, gather_beams
from kid.decoding.models import bucket, generate, generate_guided, pad_prompts, prefill
from kid.decoding.sampling import (
    MAY_END,
    Cache,
    Decoded,
    EosId,
    GuidedDecoded,
    SelectFn,
    StepFn,
    filter_logits,
    guided_sampler,
    sample,
    sampler,
)

__all__ = [
    "MAY_END",
    "BeamSearchResult",
    "Cache",
    "Decoded",
    "EosId",
    "GuidedDecoded",
    "SelectFn",
    "StepFn",
    "beam_search",
    "bucket",
    "filter_logits",
    "gather_beams",
    "generate",
    "generate_guided",
    "guided_sampler",
    "pad_prompts",
    "prefill",
    "sample",
    "sampler",
]
