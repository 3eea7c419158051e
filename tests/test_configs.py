"""configs/*.py: every argument a config's docstring documents builds a config that the main
job accepts at start (the paper configs: all but their placeholder checkpoint paths), and
the settings the docstrings promise hold (layouts, the paper's recipe, pod meshes)."""

import dataclasses
import importlib
import math
import pathlib
import re

import ml_collections
import pytest

from configs import common
from kid import job, main, methods, models
from kid.data import batching, pipeline

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
NAMES = sorted(
    p.stem
    for p in CONFIG_DIR.glob("*.py")
    if hasattr(importlib.import_module(f"configs.{p.stem}"), "get_config")
)
PAPER = ("spider_qwen", "spider_tinyllama", "spider_t5", "bird_qwen", "pod_tpu", "pod_gpu")
PODS = ("pod_tpu", "pod_gpu")
# A pod table row: name, devices, hosts, mesh "data x fsdp x tensor".
_POD_ROW = re.compile(r"^\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+) x (\d+) x (\d+)\b", re.M)


def _module(name: str):
    return importlib.import_module(f"configs.{name}")


def _documented_args(name: str) -> list[str]:
    """Each `configs/<name>.py[:ARG]` the docstring mentions ("" for no argument)."""
    doc = _module(name).__doc__ or ""
    found = re.findall(rf"configs/{name}\.py(?::([\w\-=,]+(?:\.[\w\-]+)*))?", doc)
    return sorted(set(found))


def _pod_rows(name: str) -> dict[str, tuple[int, int, dict]]:
    """{arg: (devices, hosts, mesh)} from a pod config's docstring table."""
    rows = {}
    for arg, devices, hosts, data, fsdp, tensor in _POD_ROW.findall(_module(name).__doc__):
        mesh = {"data": int(data), "fsdp": int(fsdp), "tensor": int(tensor)}
        rows[arg] = (int(devices), int(hosts), mesh)
    return rows


def _build(name: str, arg: str) -> ml_collections.ConfigDict:
    get_config = _module(name).get_config
    return get_config(arg) if arg else get_config()


CASES = [(name, arg) for name in NAMES for arg in _documented_args(name)]


def test_every_config_documents_its_command():
    assert {"demo", "demo_decoder", *PAPER} <= set(NAMES)
    for name in NAMES:
        assert _documented_args(name), f"configs/{name}.py documents no command"


def _local(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config as main.run sees it, its mesh on this machine's devices."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    return config


@pytest.mark.parametrize("name,arg", CASES)
def test_config_builds_and_is_consistent(name, arg):
    config = _build(name, arg)
    assert set(config.stages) <= set(main.STAGES)
    assert config.method in methods.REGISTRY
    assert set(config.kd) <= set(job.kd_section())
    assert set(config.mesh) <= set(job.MESH_AXES)
    sizes = list(config.mesh.values())
    assert sizes.count(-1) <= 1 and all(s == -1 or s >= 1 for s in sizes)
    pipeline.check_config(config.data)
    batch, eval_batch = config.data.batch_size, config.data.eval_batch_size
    for section in (config.teacher, config.student):
        assert batch % section.train.micro_batches == 0
        assert section.dtype in job.DTYPES and section.param_dtype in job.DTYPES
    if -1 not in sizes:  # a mesh for a known device count: rows split evenly over it
        rows = config.mesh.data * config.mesh.fsdp
        assert batch % rows == 0 and eval_batch % rows == 0
    if config.distributed.num_processes > 1:
        assert batch % config.distributed.num_processes == 0
        assert eval_batch % config.distributed.num_processes == 0
    assert config.kd.max_new_tokens >= max(config.data.target_buckets)


def _needs_trained_teacher(name: str, arg: str) -> bool:
    return name == "experiments" and arg != "teacher"


@pytest.mark.parametrize(
    "name,arg", [c for c in CASES if c[0] not in PAPER and not _needs_trained_teacher(*c)]
)
def test_demo_configs_pass_validation(name, arg):
    job.validate(_local(_build(name, arg)), tuple(main.STAGES))


@pytest.mark.parametrize("arg", ["kid,seed=1", "sft,seed=2", "rkd"])
def test_experiment_students_load_the_one_teacher(arg, tmp_path, monkeypatch):
    """Students train alone, at one size and budget, against the teacher run's workdir."""
    monkeypatch.chdir(tmp_path)  # no teacher trained there
    config = _local(_build("experiments", arg))
    teacher = _build("experiments", "teacher")
    assert config.stages == ("benchmark", "student", "eval", "report")
    assert config.method == arg.split(",")[0] and config.seed == int(arg.partition("=")[2] or 0)
    assert config.teacher.train.steps == 0 and config.benchmark.dir == teacher.benchmark.dir
    assert config.data.tokenizer == f"{_module('experiments').ROOT}/teacher/tokenizer"
    assert config.teacher.checkpoint.startswith(experiments_root := _module("experiments").ROOT)
    assert config.student.train.to_dict() == teacher.student.train.to_dict()
    with pytest.raises(job.ConfigError, match=re.escape(f"'{experiments_root}/teacher/teacher'")):
        job.validate(config, tuple(main.STAGES))
    config.teacher.checkpoint = str(tmp_path)
    job.validate(config, tuple(main.STAGES))
    with pytest.raises(ValueError, match="unknown argument 'steps=3'"):
        _build("experiments", "kid,steps=3")


@pytest.mark.parametrize("name,arg", [c for c in CASES if c[0] in PAPER])
def test_paper_configs_refused_only_for_their_placeholder_checkpoints(name, arg, tmp_path):
    config = _local(_build(name, arg))
    for section in ("teacher", "student"):
        assert config[section].checkpoint.startswith(common.PLACEHOLDER)
    with pytest.raises(job.ConfigError, match=r"teacher\.checkpoint '/path/to/"):
        job.validate(config, tuple(main.STAGES))
    config.teacher.checkpoint = str(tmp_path)
    with pytest.raises(job.ConfigError, match=r"student\.checkpoint '/path/to/"):
        job.validate(config, tuple(main.STAGES))
    config.student.checkpoint = str(tmp_path)
    job.validate(config, tuple(main.STAGES))  # nothing else is wrong


@pytest.mark.parametrize(
    "name,arg", [("spider_qwen", "13b"), ("bird_qwen", "nope"), ("pod_tpu", "v3-8")]
)
def test_unknown_argument_refused(name, arg):
    with pytest.raises(ValueError, match=re.escape(f"configs/{name}.py:{arg}")):
        _build(name, arg)


@pytest.mark.parametrize("arg", ["eight", "0x8", "2x"])
def test_pod_gpu_refuses_a_bad_shape(arg):
    with pytest.raises(ValueError, match="configs/pod_gpu.py"):
        _build("pod_gpu", arg)


def _flat(config: ml_collections.ConfigDict) -> dict:
    out = {}

    def walk(prefix, node):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                out[f"{prefix}{key}"] = value

    walk("", config.to_dict())
    return out


@pytest.mark.parametrize("arg", ["", "runlocal"])
def test_demo_decoder_is_demo_with_decoder_only_models(arg):
    """demo.py's scratch variant (the shipped teacher is a T5) with decoder-only models."""
    demo, decoder = _flat(_build("demo", arg or "scratch")), _flat(_build("demo_decoder", arg))
    changed = {k for k in demo.keys() | decoder.keys() if demo.get(k) != decoder.get(k)}
    core = {"data.layout", "data.prompt_style", "data.prompt_buckets"}
    core |= {"teacher.preset", "student.preset"}
    assert core <= changed
    decoder_fields = {f.name for f in dataclasses.fields(models.DecoderConfig)}
    for key in changed - core:  # only demo's T5-only model overrides, dropped
        section, overrides, field = key.split(".")
        assert section in ("teacher", "student") and overrides == "overrides", key
        assert field not in decoder_fields and key not in decoder, key
    config = _build("demo_decoder", arg)
    assert (config.data.layout, config.data.prompt_style) == (batching.DECODER_ONLY, "codes")
    for section in (config.teacher, config.student):
        model = models.get_config(section.preset, **section.overrides.to_dict())
        assert isinstance(model, models.DecoderConfig)
        longest = max(config.data.prompt_buckets) + max(config.data.target_buckets)
        assert longest <= model.max_position_embeddings


def test_paper_recipe():
    """The KID paper's settings (../shared/docs/KID-method.md) and the T5 extension's."""
    steps = {"spider_qwen": 3500, "spider_tinyllama": 1750, "spider_t5": 3500, "bird_qwen": 4714}
    masks = {"spider_t5": "<extra_id_0>", "spider_tinyllama": "<unk>"}  # else an added <mask>
    for name, arg in CASES:
        if name not in PAPER:
            continue
        config = _build(name, arg)
        t5 = name == "spider_t5"
        layout = batching.ENCODER_DECODER if t5 else batching.DECODER_ONLY
        assert (config.data.layout, config.data.prompt_style) == (layout, "t5" if t5 else "codes")
        assert config.data.batch_size == 16 and config.method == "kid" and config.kd.alpha == 0.2
        assert config.teacher.train.steps == 0  # a fine-tuned teacher, used as it is
        assert config.student.train.steps == steps.get(name, 3500)
        for section in (config.teacher, config.student):
            assert section.dtype == "bfloat16"
            assert (section.lora_rank, section.lora_alpha) == ((0, 32.0) if t5 else (64, 32.0))
            assert section.train.learning_rate == (1e-4 if t5 else 2e-4)
        assert config.data.mask_token == masks.get(name, "<mask>")
        assert len(config.eval.splits) == 1 and job.split_name(config.eval.splits[0]) == "dev"
    assert max(_build("spider_qwen", "7b").data.prompt_buckets) == 1024
    assert max(_build("spider_tinyllama", "").data.target_buckets) == 256
    qwen = {arg: _build("spider_qwen", arg).teacher.checkpoint for arg in ("1.8b", "7b")}
    assert "1.8B" in qwen["1.8b"] and "7B" in qwen["7b"]
    assert _build("bird_qwen", "evidence").data.use_evidence
    assert not _build("bird_qwen", "").data.use_evidence
    assert not _build("spider_qwen", "7b").data.use_evidence


def test_tokenizer_follows_the_student_checkpoint_unless_set():
    config = _build("spider_qwen", "7b")
    config.student.checkpoint = "/ckpt/qwen-0.5b"
    assert config.data.tokenizer == "/ckpt/qwen-0.5b"
    assert ml_collections.ConfigDict(config.to_dict()).data.tokenizer == "/ckpt/qwen-0.5b"
    config.data.tokenizer = "/ckpt/tokenizer"
    config.student.checkpoint = "/ckpt/other"
    assert (config.data.tokenizer, config.student.checkpoint) == ("/ckpt/tokenizer", "/ckpt/other")


@pytest.mark.parametrize("name", PODS)
def test_pod_meshes_match_their_documented_devices(name):
    rows = _pod_rows(name)
    assert rows and set(rows) >= {a for a in _documented_args(name) if a}
    for arg, (devices, hosts, mesh) in rows.items():
        config = _build(name, arg)
        assert dict(config.mesh) == mesh and math.prod(mesh.values()) == devices
        assert devices % hosts == 0
        assert config.data.batch_size % hosts == 0
        assert config.data.batch_size % (mesh["data"] * mesh["fsdp"]) == 0
        if name == "pod_tpu":
            assert config.distributed.auto
        else:  # data across hosts, fsdp over the GPUs of a host
            assert (mesh["data"], mesh["fsdp"]) == (hosts, devices // hosts)
            assert config.distributed.num_processes == hosts


@pytest.mark.parametrize("name", PODS)
def test_pods_are_spider_qwen_7b_on_another_mesh(name):
    base = _flat(_build("spider_qwen", "7b"))
    pod = _flat(_build(name, ""))
    changed = {k for k in base.keys() | pod.keys() if base.get(k) != pod.get(k)}
    assert changed and all(k.startswith(("mesh.", "distributed.")) for k in changed)
