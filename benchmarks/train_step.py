"""Train-step time per batch shape on the embedded benchmark, and the backward's cost
against the forward: the figures that decide the demo's budget on a CPU.

  python benchmarks/train_step.py [--config configs/demo.py] [--model teacher] [--steps 30]

Prints, for each (prompt, target) batch shape of the training split, its share of batches,
compile time and median step time, the examples per second of a whole epoch, and the
forward and gradient time of the most common shape (ratios from one run: the machine is
shared).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from kid import (  # noqa: E402
    job,
    main,
    methods,
    models,
    sharding,
    synth,  # noqa: E402
    train,
)
from kid.data import grouping, pipeline  # noqa: E402
from kid.models import forward as fwd  # noqa: E402


def _timed(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def main_(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(main._DEMO_CONFIG))
    parser.add_argument("--model", default="teacher", choices=("teacher", "student"))
    parser.add_argument("--steps", type=int, default=30, help="timed steps per shape")
    parser.add_argument("--workdir", default="", help="reuse a workdir's benchmark/tokenizer")
    args = parser.parse_args(argv)
    path, _, arg = args.config.partition(":")
    namespace: dict = {}
    exec(compile(open(path).read(), path, "exec"), namespace)  # noqa: S102 - a config file
    config = namespace["get_config"](arg)
    workdir = args.workdir or tempfile.mkdtemp(prefix="kid_train_step_")
    bench = os.path.join(workdir, "benchmark")
    if not os.path.exists(os.path.join(bench, "tables.json")):
        c = config.benchmark
        synth.generate(bench, seed=c.seed, sizes=synth.Sizes(c.train, c.dev, c.dev_in_domain))
    data = job.load_data(config, bench, workdir)
    section = config[args.model]
    module = models.build(job.preset_config(section, data.tok, args.model))
    mesh = sharding.make_mesh(dict(config.mesh))
    params = models.init(module, jax.random.key(0), mesh=mesh)
    kd = methods.KDConfig(
        method="sft",
        student=module,
        vocab_size=len(data.tok),
        pad_id=data.tok.pad_id,
        eos_id=data.tok.eos_id,
    )
    tx = train.optimizer(section.train)
    shardings = train.state_shardings(models.shardings(module, mesh), tx, params, mesh)
    state = jax.jit(lambda p: train.init_state(p, tx, jax.random.key(0)), out_shardings=shardings)(
        params
    )
    step = train.TrainStep(methods.loss_fn(kd), tx, mesh, shardings, {"student": {}})
    batches, split = pipeline.build(data.config, data.train, data.tok, train=True)
    options = pipeline.batch_options(data.config, data.tok, train=True)
    groups = grouping.length_groups(split, options)
    share = {g.shape: len(g.indices) // options.batch_size for g in groups}
    examples: dict = {}
    it = iter(batches)
    while len(examples) < len(share):
        local = next(it)
        examples.setdefault((local["input_ids"].shape[1], local["targets"].shape[1]), local)
    rows, seconds = [], collections.Counter()
    for shape, local in sorted(examples.items()):
        batch = train.global_batch(local, mesh)
        start = time.perf_counter()
        state, metrics = step(state, {"student": {}}, batch)
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - start
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            state, metrics = step(state, {"student": {}}, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        seconds[shape] = median * share.get(shape, 0)
        rows.append((shape, share.get(shape, 0), compile_s, median))
    total_batches = sum(share.values())
    print(
        f"{args.model}: {sum(x.size for x in jax.tree.leaves(params)):,} params, batch {options.batch_size}"
    )
    print(f"{'shape':>12} {'batches':>8} {'compile s':>10} {'step s':>8}")
    for shape, count, compile_s, median in rows:
        print(f"{str(shape):>12} {count:>8} {compile_s:>10.1f} {median:>8.3f}")
    epoch_s = sum(seconds.values())
    print(
        f"epoch: {total_batches} batches, {epoch_s:.0f} s, {total_batches * options.batch_size / epoch_s:.0f} examples/s"
    )
    common = max(share, key=share.get)
    batch = train.global_batch(examples[common], mesh)
    loss = methods.loss_fn(kd)
    forward = jax.jit(lambda p, b: fwd.forward(module, {"params": p}, b))
    grad = jax.jit(jax.grad(lambda p, b: loss(p, {"student": {}}, b, jax.random.key(0))[0]))
    f_s = _timed(forward, state.params, batch, repeats=args.steps)
    g_s = _timed(grad, state.params, batch, repeats=args.steps)
    print(f"shape {common}: forward {f_s:.3f} s, gradient {g_s:.3f} s ({g_s / f_s:.1f}x)")


if __name__ == "__main__":
    main_()
