"""The shipped teacher: a T5 trained once on the demo's benchmark and kept in
data/teachers/t5-synth/ (CONTRACT 10), so the main job distils without training one.

  python -m kid.main --config configs/teacher.py --workdir workdir/teacher
  python -m kid.export --workdir workdir/teacher --model-name teacher \\
      --out data/teachers/t5-synth --manifest-config configs/teacher.py

The benchmark is the demo's (same seed, sizes and databases), so the teacher's training
file and tokenizer digests match the one the main job generates. The teacher evaluates on
val_in_domain while training; its best checkpoint there is the one exported.
"""

import ml_collections

from configs import demo


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    config = demo.get_config()
    config.stages = ("benchmark", "teacher", "eval")
    config.eval.splits = ("dev_in_domain.json", "dev.json", "val_in_domain.json")
    demo.train_teacher_in_job(config, steps=8000)  # its own BPE, kept in the export
    # d128 3+3 (1.6M parameters), no dropout, Adam b2 0.98, cosine to 0.
    config.teacher.train.update(
        steps=8000, learning_rate=1e-3, warmup_steps=200, log_every=100,
        eval_every=1000, save_every=1000, eval_split="val_in_domain.json", eval_examples=300,
    )  # fmt: skip
    if arg == "tiny":  # the config's test: a few steps on a small benchmark
        config.benchmark.train, config.benchmark.dev = 200, 20
        config.benchmark.dev_in_domain = config.benchmark.val_in_domain = 20
        config.benchmark.ts_copies = 1
        config.data.prompt_buckets, config.data.target_buckets = (272,), (96,)  # one compile
        config.teacher.train.update(steps=4, warmup_steps=1, log_every=2, eval_every=2,
                                    save_every=2, eval_examples=8)  # fmt: skip
    return config
