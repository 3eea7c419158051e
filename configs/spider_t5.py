"""KID with encoder-decoder models (the project's extension; the paper distils decoder-only
LMs): a T5-base student distilled from a fine-tuned T5-large teacher on Spider, with an SFT
baseline of the student's budget; T5 (PICARD-style) prompts with matched values, full
fine-tuning, batch 16, 8 epochs, max input 512 / output 128 tokens, bf16 computation.
Evaluated on Spider dev (EX, TS).

The checkpoint paths are placeholders: give local Hugging Face directories of the student
(the pretrained T5-base) and of the teacher (T5-large already fine-tuned on Spider train):

  python -m kid.main --config configs/spider_t5.py --workdir workdir/spider_t5 \
    --config.student.checkpoint=/path/to/t5-base \
    --config.teacher.checkpoint=/path/to/t5-large-spider \
    --config.data.dir=data/spider --config.eval.ts_dir=data/test-suite

To fine-tune the teacher in the same run first, pass the pretrained T5-large as
teacher.checkpoint with `--config.teacher.train.steps=3500 --config.teacher.param_dtype=float32`
(full fine-tuning needs float32 weights; the loaded teacher keeps bf16 ones).

Choices the paper does not make (no T5 there): AdamW at lr 1e-4 (T5 fine-tuning's usual
rate; the paper's 2e-4 is for LoRA); KID's mask token is T5's first sentinel "<extra_id_0>"
(a pretrained mask token, in the vocabulary); T5's vocabulary lacks "<" and "<=", which the
tokenizer gets as added tokens (T5 pads its 32,100 tokens to 32,128 embedding rows).

Runtime, estimated from FLOPs (not measured): under 1 h on one 40 GB A100 (770M teacher,
shorter prompts than the CodeS ones).
"""

import ml_collections

from configs import common
from kid.data import batching


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg:
        raise ValueError(f"configs/spider_t5.py takes no argument, got {arg!r}")
    config = common.paper_config(
        student="t5-base",
        teacher="t5-large-spider",  # fine-tuned on Spider
        # 8 epochs of Spider train (7000 examples) at batch 16: 8 * 7000 / 16 = 3500 steps.
        train_steps=common.steps(common.SPIDER_TRAIN, epochs=8),
        lora_rank=0,  # full fine-tuning
        mask_token="<extra_id_0>",
        prompt_buckets=(128, 256, 384, 512),
    )
    config.data.layout = batching.ENCODER_DECODER
    config.data.prompt_style = "t5"
    config.data.num_sample_values = 0  # T5 prompts hold matched values, no samples
    for section in (config.student, config.teacher):
        section.train.learning_rate = 1e-4
    return config
