"""The distillation study (docs/RESULTS.md, "Where distillation beats SFT"): one student of
the demo's size per run against the shipped teacher, scored on val_in_domain only (every
choice of recipe is made there; dev_in_domain and dev are reported by the demo).

  python -m kid.main --config configs/study.py:kid --workdir workdir/study/kid
  python -m kid.main --config configs/study.py:sft,seed=1,steps=6000 --workdir ...
  python -m kid.main --config configs/study.py:rkd --config.kd.temperature=2 --workdir ...

Argument: "<method>[,seed=N][,steps=N]"; the seed sets the student's initialisation, its
data order and its step randomness (KID's masks). Runs share the benchmark in
workdir/study/benchmark (the shipped teacher's). val_in_domain EX against step is in each
run's W/student/metrics.jsonl (benchmarks/learning_curves.py prints it); the KD term, the
CE, the gradient norm and the teacher's wiring checks (teacher_ce, teacher_agree,
teacher_entropy) are logged there too.
"""

import ml_collections

from configs import demo
from kid import methods

ROOT = "workdir/study"


def _parse(arg: str) -> tuple[str, dict[str, int]]:
    method, *rest = arg.split(",")
    options = {"seed": 0, "steps": 1500}
    for item in rest:
        key, _, value = item.partition("=")
        if key not in options or not value.isdigit() or (key == "steps" and int(value) < 1):
            raise ValueError(f"configs/study.py: bad argument {item!r} in {arg!r}")
        options[key] = int(value)
    return method or "kid", options


def get_config(arg: str = "kid") -> ml_collections.ConfigDict:
    method, options = _parse(arg)
    config = demo.get_config()
    config.stages = ("benchmark", "student", "eval", "report")
    config.benchmark.dir = f"{ROOT}/benchmark"
    config.eval.splits = ("val_in_domain.json",)
    config.method = method
    if method not in methods.CONFIGURABLE_DIVERGENCE:
        config.kd.divergence = ""  # the recipe's divergence is KID's; others fix their own
    seed, steps = options["seed"], options["steps"]
    config.seed = config.data.seed = config.student.train.seed = seed
    config.student.train.update(
        steps=steps, warmup_steps=max(1, steps // 10), eval_every=max(250, steps // 6),
        save_every=max(250, steps // 6),
    )  # fmt: skip
    return config
