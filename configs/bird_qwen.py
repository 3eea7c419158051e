"""The KID paper's BIRD setting: spider_qwen.py's 7B case (a Qwen1.5-0.5B student, a
fine-tuned Qwen1.5-7B teacher, CodeS prompts, LoRA 64 / 32, lr 2e-4, batch 16, 8 epochs,
max input 1024 / output 128) on BIRD train, evaluated on BIRD dev, with or without BIRD's
external-knowledge "evidence" in the prompts:

  python -m kid.main --config configs/bird_qwen.py:evidence --workdir workdir/bird_evidence \
    --config.student.checkpoint=/path/to/Qwen1.5-0.5B \
    --config.teacher.checkpoint=/path/to/qwen1.5-7b-bird-evidence \
    --config.data.dir=data/bird

`configs/bird_qwen.py` (no argument) leaves the evidence out (its teacher: fine-tuned
without evidence too). The checkpoint paths are placeholders, as in spider_qwen.py.

BIRD keeps its own layout (data/README.md): data.dir holds train/ (train.json,
train_tables.json, train_databases/) and dev/ (dev.json, dev_tables.json,
dev_databases/); kid.data.spider.layout_for finds each split's tables and databases. With
both splits in one folder, pass `--config.data.train=train.json
--config.eval.splits="('dev.json',)"`. BIRD has no test-suite databases (TS is null).

The report's EX is Spider's (result multisets; row order under ORDER BY); the paper's BIRD
EX compares row sets. Rescore the predictions with BIRD's metric:

  python -m kid.evaluate --gold data/bird/dev/dev.sql --pred W/student/eval/dev.sql \
    --db-dir data/bird/dev/dev_databases --table data/bird/dev/dev_tables.json \
    --etype exec --metric bird

Runtime, estimated from FLOPs (not measured): about 3 h on one 80 GB A100 (BIRD's prompts
fill the 1024-token budget more often than Spider's, and 4714 steps instead of 3500).
"""

import ml_collections

from configs import common, spider_qwen

EVIDENCE = {"evidence": True, "": False}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in EVIDENCE:
        raise ValueError(f"configs/bird_qwen.py:{arg}: the argument is 'evidence' or none")
    config = spider_qwen.get_config("7b")
    config.teacher.checkpoint = common.PLACEHOLDER + (
        "Qwen1.5-7B-bird-evidence" if EVIDENCE[arg] else "Qwen1.5-7B-bird"  # fine-tuned on BIRD
    )
    config.data.dir = "data/bird"
    config.data.train = "train/train.json"
    config.data.use_evidence = EVIDENCE[arg]
    config.eval.splits = ("dev/dev.json",)  # reported as "dev"
    config.eval.ts_dir = ""
    # 8 epochs of BIRD train (9428 examples) at batch 16: 8 * 9428 / 16 = 4714 steps.
    config.student.train.steps = common.steps(common.BIRD_TRAIN, epochs=8)
    return config
