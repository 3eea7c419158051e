"""Train state, optimizer and the jitted train step.

    state = init_state(trainable, tx, rng)
    step = TrainStep(loss, tx, mesh, state_shardings, frozen_shardings, micro_batches=k)
    state, metrics = step(state, frozen, batch)      # batch: global arrays (``global_batch``)

The step is one pure function, ``train_step(state, frozen, batch)``, jitted with in / out
shardings and the state donated. ``TrainStep`` compiles it once per batch shape and logs
each compile, so a run compiles exactly once per (prompt, target) bucket of its split.

Gradient accumulation (``micro_batches`` > 1) splits the global batch into micro-batches
(rows strided over the batch, so every device holds a slice of each) and scans over them.
It adds each loss term's summed loss and token count over the micro-batches and divides
once, so the loss and gradient equal the whole batch's: for loss = sum_t w_t S_t / N_t, the
gradient is sum_t (w_t / N_t) sum_m grad S_t^m, one accumulated gradient per term (a
vmapped backward per micro-batch). ``optax.MultiSteps`` averages micro-batch means instead,
which weights a short micro-batch's tokens more.

A step whose loss or gradient is not finite leaves the state unchanged and reports
``finite = 0``; the loop stops the run there, so the last checkpoint stays the last good one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kid import sharding

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
LossFn = Callable[..., tuple[jax.Array, Metrics]]
SCHEDULES = ("cosine", "linear", "constant")


@flax.struct.dataclass
class TrainState:
    """What a checkpoint holds of a training run (never the teacher or frozen weights)."""

    step: jax.Array  # int32 []: optimizer updates applied
    params: Any  # the trainable collection: full params or LoRA adapters
    opt_state: Any
    rng: jax.Array  # typed PRNG key; step i uses fold_in(rng, i)


def default_config() -> ml_collections.ConfigDict:
    """The `train` section of a model in an experiment config."""
    c = ml_collections.ConfigDict()
    c.steps = 1000
    c.learning_rate = 1e-3
    c.schedule = "cosine"  # one of SCHEDULES; warmup is linear from 0
    c.warmup_steps = 100
    c.end_learning_rate = 0.0  # cosine / linear decay end value
    c.weight_decay = 0.01  # AdamW, on matrices only (not norms, biases)
    c.b1 = 0.9
    c.b2 = 0.999
    c.clip_norm = 1.0  # global gradient norm; 0 disables
    c.micro_batches = 1  # gradient accumulation: the global batch in this many pieces
    c.log_every = 10
    c.eval_every = 0  # steps between dev evaluations while training (0: none)
    c.eval_split = ""  # the split evaluated while training (default: the first eval split)
    c.eval_examples = 0  # evaluate only the first N examples while training (0: all)
    c.save_every = 200  # steps between checkpoints (the last step is always saved)
    c.keep = 2  # latest checkpoints kept for resume (the best by dev EX is kept apart)
    c.seed = 0
    return c


def learning_rate_schedule(c: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate``, then cosine / linear decay to
    ``end_learning_rate`` at ``steps`` (or constant)."""
    if c.schedule not in SCHEDULES:
        raise ValueError(f"train.schedule {c.schedule!r} is not one of {SCHEDULES}")
    if c.steps < 1 or not 0 <= c.warmup_steps <= c.steps:
        raise ValueError(f"train.steps {c.steps} must be >= 1 and >= train.warmup_steps")
    warmup = optax.linear_schedule(0.0, c.learning_rate, max(c.warmup_steps, 1))
    decay_steps = max(c.steps - c.warmup_steps, 1)
    if c.schedule == "cosine":
        decay = optax.cosine_decay_schedule(
            c.learning_rate, decay_steps, alpha=c.end_learning_rate / max(c.learning_rate, 1e-30)
        )
    elif c.schedule == "linear":
        decay = optax.linear_schedule(c.learning_rate, c.end_learning_rate, decay_steps)
    else:
        decay = optax.constant_schedule(c.learning_rate)
    if c.warmup_steps == 0:
        return decay
    return optax.join_schedules([warmup, decay], [c.warmup_steps])


def _decay_mask(params: Any) -> Any:
    """Weight decay on matrices (embeddings, kernels, LoRA factors), not on norms or biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def optimizer(c: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with the configured schedule, after global-norm clipping."""
    if c.micro_batches < 1:
        raise ValueError(f"train.micro_batches must be >= 1, got {c.micro_batches}")
    adamw = optax.adamw(
        learning_rate_schedule(c),
        b1=c.b1,
        b2=c.b2,
        weight_decay=c.weight_decay,
        mask=_decay_mask,
    )
    if c.clip_norm <= 0:
        return adamw
    return optax.chain(optax.clip_by_global_norm(c.clip_norm), adamw)


def init_state(params: Any, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), rng)


# ----------------------------------------------------------------------------------------------
# The step.


def _term_names(metrics: Metrics) -> list[str]:
    return sorted(k[: -len("/sum")] for k in metrics if k.endswith("/sum"))


def _micro_batches(batch: Batch, k: int) -> Batch:
    """[B, ...] -> [k, B / k, ...]; micro-batch m holds rows m, m + k, ... so each device's
    rows are spread over all micro-batches."""

    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} rows does not split into {k} micro-batches")
        return jnp.moveaxis(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 1, 0)

    return jax.tree.map(split, batch)


def _accumulated_grads(loss_fn: LossFn, state: TrainState, frozen, batch: Batch, k: int, rng):
    """(loss, metrics, grads) of the whole batch from k micro-batches, normalised once."""
    micro = _micro_batches(batch, k)
    first = jax.tree.map(lambda x: x[0], micro)
    _, probe = jax.eval_shape(
        lambda p: loss_fn(p, frozen, first, rng, step=state.step), state.params
    )
    names = _term_names(probe)

    def term_sums(params, micro_batch, micro_rng):
        _, metrics = loss_fn(params, frozen, micro_batch, micro_rng, step=state.step)
        return jnp.stack([metrics[f"{n}/sum"] for n in names]), metrics

    def body(carry, xs):
        sums, tokens, grads = carry
        micro_batch, m = xs
        micro_rng = jax.random.fold_in(rng, m)
        s, vjp, metrics = jax.vjp(
            lambda p: term_sums(p, micro_batch, micro_rng), state.params, has_aux=True
        )
        (g,) = jax.vmap(vjp)(jnp.eye(len(names), dtype=s.dtype))  # [terms, ...] per leaf
        t = jnp.stack([metrics[f"{n}/tokens"] for n in names])
        weights = jnp.stack([metrics[f"{n}/weight"] for n in names])
        others = {k: v for k, v in metrics.items() if k.split("/")[0] not in names}
        return (sums + s, tokens + t, jax.tree.map(jnp.add, grads, g)), (weights, others)

    zeros = jax.tree.map(lambda p: jnp.zeros((len(names), *p.shape), p.dtype), state.params)
    init = (jnp.zeros(len(names)), jnp.zeros(len(names)), zeros)
    (sums, tokens, grads), (weights, others) = jax.lax.scan(body, init, (micro, jnp.arange(k)))
    scale = weights[-1] / jnp.maximum(tokens, 1.0)  # [terms]: w_t / N_t
    grads = jax.tree.map(lambda g: jnp.tensordot(scale.astype(g.dtype), g, axes=1), grads)
    means = sums / jnp.maximum(tokens, 1.0)
    metrics = {k: jnp.mean(v) for k, v in others.items()}  # e.g. KID's masked fraction
    metrics |= {n: means[i] for i, n in enumerate(names)}
    metrics |= {f"{n}/tokens": tokens[i] for i, n in enumerate(names)}
    return jnp.sum(weights[-1] * means), metrics, grads


def _token_count(batch: Batch) -> jax.Array:
    """Real (non-padding) tokens the models read: prompt and target, both layouts."""
    total = jnp.sum(batch["attention_mask"] * batch["weights"][:, None])
    if "decoder_attention_mask" in batch:
        total += jnp.sum(batch["decoder_attention_mask"] * batch["weights"][:, None])
    return total.astype(jnp.float32)


def train_step(
    state: TrainState,
    frozen: Any,
    batch: Batch,
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    micro_batches: int = 1,
) -> tuple[TrainState, Metrics]:
    """One optimizer update on a global batch; pure (jit it with ``TrainStep``).

    Args:
      state: the TrainState.
      frozen: what the loss reads but does not train (kid.methods: {"student", "teacher"}).
      batch: a kid.data.batching batch of global arrays.
      loss_fn: ``(trainable, frozen, batch, rng, *, step) -> (loss, metrics)``.
      tx: the optax optimizer.
      micro_batches: gradient accumulation (see the module docstring).
    """
    rng = jax.random.fold_in(state.rng, state.step)
    if micro_batches == 1:
        grad_fn = jax.value_and_grad(
            lambda p: loss_fn(p, frozen, batch, rng, step=state.step), has_aux=True
        )
        (loss, metrics), grads = grad_fn(state.params)
        metrics = {k: v for k, v in metrics.items() if not k.endswith(("/sum", "/weight"))}
    else:
        loss, metrics, grads = _accumulated_grads(loss_fn, state, frozen, batch, micro_batches, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = TrainState(state.step + 1, params, opt_state, state.rng)
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    metrics = {
        **metrics,
        "loss": loss,
        "grad_norm": grad_norm,
        "param_norm": optax.tree.norm(new.params),
        "update_norm": optax.tree.norm(updates),
        "finite": finite.astype(jnp.float32),
        "tokens": _token_count(batch),
    }
    return new, metrics


# ----------------------------------------------------------------------------------------------
# Shardings and global batches.


def batch_sharding(x_shape: tuple[int, ...], mesh: Mesh, rules: sharding.Rules) -> NamedSharding:
    """Rows over the batch axes of the mesh (replicated if they do not divide)."""
    names = ("activation_batch",) + (None,) * (len(x_shape) - 1)
    return sharding.logical_sharding(names, x_shape, mesh, rules)


def global_batch(
    local: Mapping[str, np.ndarray], mesh: Mesh, rules: sharding.Rules = sharding.DEFAULT_RULES
) -> Batch:
    """This host's rows of a batch -> global arrays over the mesh (every host calls it with
    its own rows, as ``kid.data.pipeline`` gives them)."""
    out = {}
    for name, x in local.items():
        shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
        out[name] = jax.make_array_from_process_local_data(
            batch_sharding(shape, mesh, rules), x, shape
        )
    return out


def state_shardings(
    params_shardings: Any, tx: optax.GradientTransformation, params_shapes: Any, mesh: Mesh
) -> TrainState:
    """TrainState shardings: optimizer moments as their parameters, the rest replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shapes = jax.eval_shape(tx.init, params_shapes)
    opt = optax.tree_map_params(
        tx,
        lambda _, s: s,
        opt_shapes,
        params_shardings,
        transform_non_params=lambda _: replicated,
    )
    return TrainState(replicated, params_shardings, opt, replicated)


def shape_key(batch: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v.shape)) for k, v in batch.items()))


class TrainStep:
    """``train_step`` jitted with shardings and a donated state, compiled once per batch
    shape; each compile is logged with its time, and ``compiles`` counts them."""

    def __init__(
        self,
        loss_fn: LossFn,
        tx: optax.GradientTransformation,
        mesh: Mesh,
        state_sharding: TrainState,
        frozen_sharding: Any,
        *,
        rules: sharding.Rules = sharding.DEFAULT_RULES,
        micro_batches: int = 1,
        name: str = "train",
    ):
        self.mesh, self.rules, self.name = mesh, rules, name
        self._state_sharding, self._frozen_sharding = state_sharding, frozen_sharding
        step = functools.partial(train_step, loss_fn=loss_fn, tx=tx, micro_batches=micro_batches)
        self._jitted = step
        self._compiled: dict[tuple, Any] = {}
        self.compile_s = 0.0

    @property
    def compiles(self) -> int:
        return len(self._compiled)

    def _compile(self, state, frozen, batch):
        batch_shardings = {
            k: batch_sharding(v.shape, self.mesh, self.rules) for k, v in batch.items()
        }
        jitted = jax.jit(
            self._jitted,
            in_shardings=(self._state_sharding, self._frozen_sharding, batch_shardings),
            out_shardings=(self._state_sharding, None),
            donate_argnums=(0,),
        )
        start = time.perf_counter()
        with sharding.use_mesh(self.mesh, self.rules):
            compiled = jitted.lower(state, frozen, batch).compile()
        seconds = time.perf_counter() - start
        self.compile_s += seconds
        shapes = {k: tuple(v.shape) for k, v in batch.items() if k in ("input_ids", "targets")}
        logging.info("%s step: compiled for %s in %.1f s", self.name, shapes, seconds)
        return compiled

    def __call__(self, state: TrainState, frozen: Any, batch: Batch) -> tuple[TrainState, Metrics]:
        key = shape_key(batch)
        if key not in self._compiled:
            self._compiled[key] = self._compile(state, frozen, batch)
        return self._compiled[key](state, frozen, batch)
