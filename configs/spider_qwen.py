"""The KID paper's main setting: a Qwen1.5-0.5B student distilled from a fine-tuned
Qwen1.5-1.8B or Qwen1.5-7B teacher on Spider, with an SFT baseline of the student's
budget; CodeS prompts, decoder-only, LoRA rank 64 / alpha 32, lr 2e-4, batch 16, 8 epochs,
max input 1024 / output 128 tokens, bf16 computation. Evaluated on Spider dev (EX, TS).

The checkpoint paths are placeholders: give local Hugging Face directories of the student
(the base model) and of the teacher (already fine-tuned on Spider train, e.g. exported
with `python -m kid.export`), and the Spider folder (data/README.md):

  python -m kid.main --config configs/spider_qwen.py:7b --workdir workdir/spider_qwen_7b \
    --config.student.checkpoint=/path/to/Qwen1.5-0.5B \
    --config.teacher.checkpoint=/path/to/qwen1.5-7b-spider \
    --config.data.dir=data/spider --config.eval.ts_dir=data/test-suite

`configs/spider_qwen.py:1.8b` takes the 1.8B teacher. To fine-tune the teacher in the same
run first, pass the base model as teacher.checkpoint and `--config.teacher.train.steps=3500`
(LoRA 64 / 32 and the student's schedule). data.tokenizer is the student checkpoint's
(Qwen1.5 models share one); KID's mask token "<mask>" is added to it, taking one of the
embedding rows Qwen1.5 pads its vocabulary with (151,646 tokens, 151,936 rows).

Runtime, estimated from FLOPs (not measured): about 2 h on one 80 GB A100, under 1 h on an
H100 (the 7B teacher's forward, ~1.5e14 FLOPs a step of ~10k tokens, dominates; the 1.8B
teacher takes about a third of that). One accelerator of 40 GB or more holds the 7B teacher
(bf16 weights, 15 GB) beside the student; the mesh is data parallel over all local devices.
The paper trains on Spider train, 8,659 examples (train_spider + train_others): merge the
two files into one split to match it, and set student.train.steps = 8 * 8659 / 16 = 4330.
"""

import ml_collections

from configs import common

TEACHERS = {"1.8b": "Qwen1.5-1.8B-spider", "7b": "Qwen1.5-7B-spider"}  # fine-tuned on Spider


def get_config(arg: str = "7b") -> ml_collections.ConfigDict:
    if arg not in TEACHERS:
        raise ValueError(f"configs/spider_qwen.py:{arg}: the teacher is one of {sorted(TEACHERS)}")
    return common.paper_config(
        student="Qwen1.5-0.5B",
        teacher=TEACHERS[arg],
        # 8 epochs of Spider train (7000 examples) at batch 16: 8 * 7000 / 16 = 3500 steps.
        train_steps=common.steps(common.SPIDER_TRAIN, epochs=8),
    )
