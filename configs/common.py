"""What the paper configs (spider_*, bird_*, and the pod_* built on them) share: the KID
paper's recipe on real data, with local checkpoints (Zhong et al. 2024, arXiv 2410.11371;
../shared/docs/KID-method.md restates it).

The recipe: a teacher already fine-tuned on the training split, a student distilled from
it with KID (alpha 0.2, random masking, reverse KL + CE on gold) and an SFT baseline of the
student with the same budget; LoRA on both, lr 2e-4, global batch 16, bf16 computation,
evaluated on dev by execution (EX) and test-suite (TS) accuracy.

Checkpoint paths are placeholders under /path/to/: pass real local Hugging Face directories
(config.json + *.safetensors + tokenizer files) on the command line, e.g.
`--config.student.checkpoint=/ckpt/Qwen1.5-0.5B --config.teacher.checkpoint=/ckpt/t`.
data.tokenizer follows student.checkpoint (a reference) unless set itself; KD needs the
teacher to share it (job.check_same_tokenizer refuses a pair that does not).
Data folders are placeholders under data/ (data/README.md: where each dataset goes).
"""

import math

import ml_collections

from kid import job
from kid.data import batching, pipeline

PLACEHOLDER = "/path/to/"  # every checkpoint path of the paper configs starts with it
SPIDER_TRAIN = 7000  # examples in Spider's train_spider.json
BIRD_TRAIN = 9428  # examples in BIRD's train/train.json
BATCH_SIZE = 16  # the paper's global batch
LEARNING_RATE = 2e-4  # the paper's (LoRA)


def steps(examples: int, epochs: int, batch_size: int = BATCH_SIZE) -> int:
    """Optimizer steps of `epochs` passes over `examples` at a global batch of `batch_size`
    (rounded up; the pipeline drops each length group's last partial batch per epoch, so
    the run sees slightly more epochs than `epochs`, never fewer)."""
    return math.ceil(examples * epochs / batch_size)


def model(checkpoint: str, *, steps: int, lora_rank: int, lora_alpha: float, **train):
    """A model section: a local checkpoint, bf16 computation, LoRA (rank 0: full fine-
    tuning), the paper's optimizer settings. Warmup and schedule: the paper is silent;
    linear warmup over 100 steps, then cosine decay to 0."""
    options = dict(learning_rate=LEARNING_RATE, warmup_steps=100, log_every=50)
    options.update(train)
    section = job.model_section("", steps=steps, **options)
    section.checkpoint = checkpoint
    section.dtype = "bfloat16"
    section.lora_rank = lora_rank
    section.lora_alpha = lora_alpha
    section.train.save_every = 500
    section.train.eval_every = 0  # no dev selection: the final checkpoint is evaluated
    return section


def paper_config(
    *,
    student: str,
    teacher: str,
    train_steps: int,
    lora_rank: int = 64,
    lora_alpha: float = 32.0,
    mask_token: str = "<mask>",
    prompt_buckets: tuple[int, ...] = (256, 512, 768, 1024),
    target_buckets: tuple[int, ...] = (64, 128),
) -> ml_collections.ConfigDict:
    """Decoder-only KID on Spider (the Qwen1.5 recipe: 8 epochs, max input 1024, max
    output 128); the other paper configs change what differs.

    The teacher section holds a checkpoint already fine-tuned on the training split, used
    as it is (teacher.train.steps = 0). To fine-tune it here first, point
    teacher.checkpoint at the base model and set teacher.train.steps (the student's
    budget is the paper's: `--config.teacher.train.steps=<student.train.steps>`); it trains
    with SFT and LoRA of the same rank, before the student stage. Its adapters then train
    in teacher.param_dtype, bfloat16 like its frozen weights; pass
    `--config.teacher.param_dtype=float32` for float32 ones (twice the weight memory).
    """
    config = ml_collections.ConfigDict()
    config.stages = ("teacher", "student", "baseline", "eval", "report")
    config.seed = 0

    config.data = pipeline.default_config()
    config.data.dir = "data/spider"
    config.data.train = "train_spider.json"
    config.data.layout = batching.DECODER_ONLY
    config.data.prompt_style = "codes"  # CodeS prompts: up to 2 sample values per column
    config.data.num_sample_values = 2
    config.data.mask_token = mask_token  # KID's mask; added to the vocabulary when new
    config.data.prompt_buckets = prompt_buckets  # the largest: the paper's max input
    config.data.target_buckets = target_buckets  # the largest: the paper's max output
    config.data.batch_size = BATCH_SIZE
    config.data.eval_batch_size = 32
    config.data.min_group_batches = 4

    config.eval = job.eval_section()
    config.eval.splits = ("dev.json",)
    config.eval.ts_dir = "data/test-suite"  # Spider's test-suite databases (data/README.md)
    config.eval.workers = 8

    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    config.distributed = ml_collections.ConfigDict(
        {"coordinator_address": "", "num_processes": 0, "process_id": 0, "auto": False}
    )

    config.student = model(
        PLACEHOLDER + student, steps=train_steps, lora_rank=lora_rank, lora_alpha=lora_alpha
    )
    config.teacher = model(
        PLACEHOLDER + teacher, steps=0, lora_rank=lora_rank, lora_alpha=lora_alpha
    )
    config.teacher.param_dtype = "bfloat16"  # frozen: no optimizer update to lose precision
    # The run's one vocabulary: the student checkpoint's tokenizer, unless set itself.
    config.data.tokenizer = config.student.get_ref("checkpoint").identity()

    config.method = "kid"
    config.kd = job.kd_section()
    config.kd.alpha = 0.2
    config.kd.strategy = "random"
    config.kd.max_new_tokens = max(target_buckets)  # on-policy methods' sampling budget
    return config
