"""The KID paper's LLaMA setting: a TinyLlama-1.1B student distilled from a fine-tuned
Llama-2-7B teacher on Spider, with an SFT baseline of the student's budget; CodeS prompts,
decoder-only, LoRA rank 64 / alpha 32, lr 2e-4, batch 16, 4 epochs, max output 256 tokens,
bf16 computation. Evaluated on Spider dev (EX, TS).

The checkpoint paths are placeholders: give local Hugging Face directories of the student
(the base model) and of the teacher (already fine-tuned on Spider train):

  python -m kid.main --config configs/spider_tinyllama.py --workdir workdir/spider_tinyllama \
    --config.student.checkpoint=/path/to/TinyLlama-1.1B \
    --config.teacher.checkpoint=/path/to/llama-2-7b-spider \
    --config.data.dir=data/spider --config.eval.ts_dir=data/test-suite

To fine-tune the teacher in the same run first, pass the base Llama-2-7B as
teacher.checkpoint and `--config.teacher.train.steps=1750` (LoRA 64 / 32).

Choices the paper leaves open:
* Max input: the paper gives 2048 / 256 tokens; TinyLlama was trained on 2048 positions,
  so prompts get 1792 here and prompt + SQL fit them (`--config.data.prompt_buckets=
  512,1024,1536,2048` for the paper's literal budget).
* KID's mask token is "<unk>": TinyLlama and Llama-2 share Llama's 32,000-token vocabulary
  with exactly 32,000 embedding rows, so a new token would need a resized model
  (kid.models.resize_vocab); byte fallback means "<unk>" never occurs in the data.

Runtime, estimated from FLOPs (not measured): about 1 h on one 80 GB A100 (half the
Qwen setting's steps, the same 7B-class teacher).
"""

import ml_collections

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg:
        raise ValueError(f"configs/spider_tinyllama.py takes no argument, got {arg!r}")
    config = common.paper_config(
        student="TinyLlama-1.1B",
        teacher="Llama-2-7b-spider",  # fine-tuned on Spider
        # 4 epochs of Spider train (7000 examples) at batch 16: 4 * 7000 / 16 = 1750 steps.
        train_steps=common.steps(common.SPIDER_TRAIN, epochs=4),
        mask_token="<unk>",
        prompt_buckets=(512, 1024, 1536, 1792),
        target_buckets=(64, 128, 256),
    )
    config.data.eval_batch_size = 16
    return config
