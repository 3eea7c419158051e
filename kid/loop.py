"""The training loop: jitted steps over a grain iterator, evaluation while training,
checkpoints, logs and preemption.

``fit`` resumes from the newest good checkpoint (train state and data iterator state, so
the continued run takes exactly the steps an uninterrupted one would), then runs the train
step until ``train.steps``:

- every ``log_every`` steps a line in metrics.jsonl / TensorBoard (loss, norms, learning
  rate, tokens/s) and the tqdm bar;
- every ``eval_every`` steps the dev split is decoded (jitted, greedy) and scored by the
  ``Scorer`` in the background; its EX / EM / TS join the line of the step they belong to,
  which is held back (with the lines after it) until the scores arrive, so the log stays
  in step order while training continues; the evaluated params are kept as the best
  checkpoint when their EX is the best so far;
- every ``save_every`` steps (and at the end) an async checkpoint;
- SIGTERM (preemption) saves at the next step boundary and raises ``Preempted``;
- a step whose loss is not finite stops the run (``NonFiniteLoss``) before anything is saved
  after it, so the last checkpoint is the last good state.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging
from jax.experimental import multihost_utils

from kid import checkpoints as checkpoints_lib
from kid import metrics_log, train

# (params, step) -> a future of the dev scores {"ex": ..., "em": ..., "ts": ...}; it decodes
# before returning (the params are donated by the next step), the scoring runs on.
Evaluate = Callable[[Any, int], concurrent.futures.Future]


class Preempted(Exception):
    """SIGTERM arrived; the state was saved at ``step``."""

    def __init__(self, step: int):
        super().__init__(f"preempted: saved step {step}; run the same command to resume")
        self.step = step


class NonFiniteLoss(RuntimeError):
    pass


@dataclasses.dataclass
class FitResult:
    state: train.TrainState
    steps: int  # steps taken in this process (0 when restored at the end)
    tokens: float  # real tokens read in this process
    seconds: float  # wall time of this process's loop, compiles included
    restored_step: int | None


class _Sigterm:
    """Sets a flag on SIGTERM (main thread only) and restores the old handler on exit."""

    def __init__(self):
        self.received = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, *unused):
        self.received = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def state_tree(state: train.TrainState) -> dict:
    """The checkpointed form of a TrainState (a dict whose "params" entry holds the params)."""
    return {
        "step": state.step,
        "params": state.params,
        "opt_state": state.opt_state,
        "rng": state.rng,
    }


def abstract_tree(state: train.TrainState, shardings: train.TrainState) -> dict:
    return state_tree(
        jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
        )
    )


class _HeldLines:
    """Metrics lines held back from the first step whose scores are pending."""

    def __init__(self, log: metrics_log.MetricsLog, on_scores: Callable[[int, dict], None]):
        self.log, self.on_scores = log, on_scores
        self.lines: list[tuple[int, dict]] = []
        self.pending: dict[int, concurrent.futures.Future] = {}

    def add(self, step: int, metrics: dict, future: concurrent.futures.Future | None = None):
        self.lines.append((step, metrics))
        if future is not None:
            self.pending[step] = future
        self.flush()

    def flush(self, *, wait: bool = False) -> None:
        if jax.process_count() > 1 and not wait:
            return  # every process must reach save_best together: only at save points
        while self.lines:
            step, metrics = self.lines[0]
            future = self.pending.get(step)
            if future is not None:
                if not (wait or future.done()):
                    return
                scores = future.result()
                self.on_scores(step, scores)
                metrics = {**metrics, **scores}
                del self.pending[step]
            self.log.write(step, metrics)
            self.lines.pop(0)


def _host_metrics(metrics: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in metrics.items() if not k.endswith("/weight")}


def fit(
    *,
    state: train.TrainState,
    state_sharding: train.TrainState,
    frozen: Any,
    step_fn: train.TrainStep,
    iterator: Any,
    config: ml_collections.ConfigDict,
    checkpoints: checkpoints_lib.Checkpoints,
    log_dir: str,
    evaluate: Evaluate | None = None,
    name: str = "model",
    is_main: bool = True,
) -> FitResult:
    """Trains ``state`` to ``config.steps`` (``config``: a ``kid.train.default_config()``)."""
    restored = checkpoints.restore(abstract_tree(state, state_sharding))
    restored_step = None
    if restored is not None:
        restored_step, tree, data_state = restored
        state = train.TrainState(**tree)
        if data_state is not None:
            iterator.set_state(data_state)
        logging.info("%s: restored step %d", name, restored_step)
    log = metrics_log.MetricsLog(log_dir, enabled=is_main, restored_step=restored_step)
    evaluated: dict[int, Any] = {}  # step -> params copy, until its scores arrive

    def on_scores(step: int, scores: dict) -> None:
        params = evaluated.pop(step)
        ex = scores.get("ex")
        if jax.process_count() > 1:  # process 0 scored; every process saves the best
            shared = multihost_utils.broadcast_one_to_all(np.float32(np.nan if ex is None else ex))
            ex = None if np.isnan(shared) else float(shared)
        if ex is not None:
            checkpoints.save_best(step, params, float(ex))

    held = _HeldLines(log, on_scores)
    schedule = train.learning_rate_schedule(config)
    step = start_step = int(state.step)
    start = time.perf_counter()
    tokens = jnp.zeros((), jnp.float32)
    bar = tqdm.tqdm(
        total=config.steps, initial=start_step, desc=name, disable=not is_main, dynamic_ncols=True
    )

    def check(metrics: dict, at: int) -> None:
        if float(metrics["finite"]) == 0.0:
            raise NonFiniteLoss(
                f"{name}: loss or gradient not finite at step {at}; training stopped, the last "
                f"checkpoint (step {checkpoints.latest_step()}) is the last good state"
            )

    def save(at: int, *, force: bool = False) -> None:
        held.flush(wait=True)
        checkpoints.save(at, state_tree(state), data_state=iterator.get_state(), force=force)

    try:
        with _Sigterm() as sigterm:
            previous, window = None, (0.0, time.perf_counter())
            while step < config.steps:
                batch = train.global_batch(next(iterator), step_fn.mesh, step_fn.rules)
                state, metrics = step_fn(state, frozen, batch)
                step += 1
                tokens = tokens + metrics["tokens"]
                if previous is not None:
                    check(previous, step - 1)  # one step late: the host does not wait
                previous = metrics
                evaluate_now = evaluate is not None and config.eval_every > 0
                evaluate_now = evaluate_now and step % config.eval_every == 0
                if step % config.log_every == 0 or step == config.steps or evaluate_now:
                    check(metrics, step)
                    host = _host_metrics(metrics)
                    now = time.perf_counter()
                    window_tokens = float(tokens) - window[0]
                    host["tokens_per_s"] = window_tokens / max(now - window[1], 1e-9)
                    host["learning_rate"] = float(schedule(step - 1))
                    host["compiles"] = step_fn.compiles
                    window = (float(tokens), now)
                    future = None
                    if evaluate_now:
                        evaluated[step] = copy_params(state.params)
                        future = evaluate(state.params, step)
                    held.add(step, host, future)
                    bar.set_postfix(loss=f"{host['loss']:.3f}", tok_s=f"{host['tokens_per_s']:.0f}")
                held.flush()
                bar.update(1)
                if sigterm.received:
                    save(step, force=True)
                    checkpoints.wait()
                    raise Preempted(step)
                if step % config.save_every == 0 or step == config.steps:
                    save(step)
            if previous is not None:
                check(previous, step)
            held.flush(wait=True)
            checkpoints.wait()
    finally:
        bar.close()
        log.close()
    return FitResult(
        state, step - start_step, float(tokens), time.perf_counter() - start, restored_step
    )


def copy_params(params: Any) -> Any:
    """A copy that survives the next step's donation of the state."""
    return jax.tree.map(jnp.copy, params)
