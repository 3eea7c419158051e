"""A trained student's loss terms on train against val_in_domain: gold CE, KD term, gradient
norm and the teacher's checks (its CE on gold, argmax agreement, entropy) at the positions
the KD term uses, averaged over the first batches of each split.

  python benchmarks/kd_terms.py workdir/study/kid_s0 workdir/study/sft_s0 [--batches 8]

A teacher that is near one-hot on its own training data (entropy ~0, CE ~0) carries little
more than the gold labels there; the same figures on val_in_domain say how much softer it
is on questions it has not seen. For an SFT run the KD and teacher columns are those of
FKD's loss with the run's teacher (the method does not use one).
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import ml_collections
import numpy as np
import optax

from kid import job, main, methods, stages
from kid.data import pipeline

COLUMNS = ("ce", "kd", "grad_norm", "teacher_ce", "teacher_agree", "teacher_entropy")


def _run(workdir: str) -> stages.Run:
    with open(os.path.join(workdir, job.RUN_CONFIG_FILE), encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
    job.resolve_teachers(config)
    config.eval.splits = ("val_in_domain.json",)
    report = {"models": {}, "timings": {}}
    return stages.Run(
        config, workdir, report, job.make_mesh(config), main._data_dir(config, workdir)
    )


def terms(workdir: str, batches: int) -> dict[str, dict[str, float]]:
    """{split: {column: mean over the first `batches` training batches}}."""
    run = _run(workdir)
    stages.teacher(run)
    method = run.config.method
    spec, variables = stages.train_model(
        run, "student", run.config.student, method, run.models["teacher"]
    )
    teacher = run.models["teacher"]
    own = methods.loss_fn(stages._kd_config(run, method, spec, teacher))
    probe = methods.loss_fn(
        stages._kd_config(run, "fkd" if method == "sft" else method, spec, teacher)
    )
    frozen = {"student": {}, "teacher": teacher[1]}

    @jax.jit
    def measure(params, batch, rng):
        grads = jax.grad(lambda p: own(p, frozen, batch, rng)[0])(params)
        _, metrics = probe(params, frozen, batch, rng)
        return {**metrics, "grad_norm": optax.tree.norm(grads)}

    start = getattr(spec.config, "decoder_start_token_id", None)
    splits = {"train": run.data.fit, "val_in_domain": run.data.evals["val_in_domain"]}
    out = {}
    for name, dataset in splits.items():
        built, _ = pipeline.build(
            run.data.config, dataset, run.data.tok, train=True, decoder_start_id=start
        )
        rows = [measure(variables["params"], built[i], jax.random.key(i)) for i in range(batches)]
        out[name] = {c: float(np.mean([r[c] for r in rows])) for c in COLUMNS}
    return out


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args(argv)
    print(f"{'run':<28}{'split':<15}" + "".join(f"{c:>16}" for c in COLUMNS))
    for workdir in args.workdirs:
        for split, values in terms(workdir, args.batches).items():
            name = os.path.basename(os.path.normpath(workdir))
            print(f"{name:<28}{split:<15}" + "".join(f"{values[c]:>16.4f}" for c in COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
