"""From an experiment config to the objects a run needs: mesh, data, tokenizer and models.

A config (``configs/*.py``, ``get_config(arg)``) has these sections; ``model_section`` and
``kd_section`` give their defaults:

    stages        e.g. ("benchmark", "teacher", "student", "baseline", "eval", "report")
    seed          model initialisation
    benchmark     the embedded benchmark (dir "" : <workdir>/benchmark), if a stage uses it
    data          kid.data.pipeline.default_config(); data.dir "" : the embedded benchmark
    eval          splits evaluated, test-suite folder, executor workers and timeout, decoding
    mesh          {"data": -1, "fsdp": 1, "tensor": 1}: axis sizes (-1: the remaining devices)
    distributed   multi-host: jax.distributed.initialize arguments (or the environment's)
    teacher, student   model_section(): preset or checkpoint, LoRA, dtype, train options
    method, kd    the student's KD method (kid.methods.REGISTRY) and its KDConfig options

A workdir holds one directory per model (``W/<name>/``: model.json, checkpoints/,
metrics.jsonl, tb/, done.json when its training finished) and ``W/tokenizer/``, shared by
every model of the run (KD needs one vocabulary).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from kid import checkpoints as checkpoints_lib
from kid import methods, models, sharding, synth, teachers, train
from kid.data import jsonio, pipeline, spider
from kid.data import tokenizer as tokenizer_lib
from kid.models import configs as model_configs

MODEL_FILE = "model.json"
DONE_FILE = "done.json"
RUN_CONFIG_FILE = "config.json"  # W/config.json: the run's config (kid.predict reads it)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
MESH_AXES = ("data", "fsdp", "tensor")


class ConfigError(ValueError):
    """A config that cannot run; the message names the field."""


def model_section(preset: str = "", **train_overrides) -> ml_collections.ConfigDict:
    """A model: a preset trained from scratch, or a local checkpoint, and how it trains."""
    c = ml_collections.ConfigDict()
    c.preset = preset  # a kid.models.CONFIGS name, sized for the tokenizer
    c.overrides = ml_collections.ConfigDict()  # fields of its T5Config / DecoderConfig
    # A local HF directory (config.json + safetensors) or a kid workdir model directory
    # (W/<name>): the starting weights (a teacher: used as it is, not trained).
    c.checkpoint = ""
    c.dtype = "float32"  # computation: float32 | bfloat16
    c.param_dtype = "float32"
    c.lora_rank = 0  # > 0: train LoRA adapters of this rank, the base frozen
    c.lora_alpha = 16.0
    c.lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "q", "k", "v", "o")
    c.train = train.default_config()
    c.train.update(train_overrides)
    return c


def kd_section() -> ml_collections.ConfigDict:
    """The KDConfig options of the student's method (kid.methods.KDConfig's fields)."""
    c = ml_collections.ConfigDict()
    for field in dataclasses.fields(methods.KDConfig):
        if field.name in ("method", "student", "teacher", "trainable", "vocab_size"):
            continue
        if field.name in ("pad_id", "eos_id", "mask_id", "dropout"):
            continue  # from the tokenizer; dropout runs when the model's rate is > 0
        c[field.name] = field.default
    return c


def eval_section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.splits = ("dev.json",)  # data.dir files (json) or split names (tfds)
    c.ts_dir = ""  # test-suite databases ("" : none; the embedded benchmark's database_ts)
    c.workers = 2
    c.timeout = 30.0
    c.method = "greedy"  # greedy | beam
    c.num_beams = 4
    return c


def split_name(split: str) -> str:
    """The report's name of a split: its file name without .json ("dev")."""
    base = os.path.basename(split)
    return base[: -len(".json")] if base.endswith(".json") else base


# ----------------------------------------------------------------------------------------------
# Devices.


def init_distributed(config: ml_collections.ConfigDict) -> None:
    """``jax.distributed.initialize`` for multi-host runs: from ``config.distributed`` when
    it names a coordinator, else from the environment (TPU pods, SLURM) when
    ``config.distributed.auto``."""
    c = config.get("distributed")
    if c is None or jax.distributed.is_initialized():
        return
    if c.coordinator_address:
        if c.num_processes < 1 or not 0 <= c.process_id < c.num_processes:
            raise ConfigError(
                f"distributed.num_processes {c.num_processes} / process_id {c.process_id}: "
                "need num_processes >= 1 and 0 <= process_id < num_processes"
            )
        jax.distributed.initialize(c.coordinator_address, c.num_processes, c.process_id)
    elif c.auto:
        jax.distributed.initialize()


def make_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    shape = dict(config.mesh)
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
        raise ConfigError(f"mesh: unknown axes {unknown}; known: {MESH_AXES}")
    try:
        return sharding.make_mesh(shape)
    except ValueError as e:
        raise ConfigError(f"mesh {shape}: {e}") from None


# ----------------------------------------------------------------------------------------------
# Data.


@dataclasses.dataclass
class Data:
    config: ml_collections.ConfigDict  # the data section, dir resolved
    tok: tokenizer_lib.Tokenizer
    train: spider.Dataset
    evals: dict[str, spider.Dataset]  # report split name -> dataset

    @property
    def fit(self) -> spider.Dataset:
        """What models train on: the first ``data.train_examples`` of train (0: all)."""
        n = self.config.get("train_examples", 0)
        return (
            dataclasses.replace(self.train, examples=self.train.examples[:n]) if n else self.train
        )


def training_eval_splits(config: ml_collections.ConfigDict) -> list[str]:
    """The splits models evaluate on while training (e.g. val_in_domain.json), which the
    eval stage need not report."""
    return [
        config[name].train.eval_split
        for name in ("teacher", "student")
        if name in config and config[name].train.eval_every and config[name].train.eval_split
    ]


def load_data(config: ml_collections.ConfigDict, data_dir: str, workdir: str) -> Data:
    """The training split, the splits evaluated (eval.splits, and those evaluated while
    training) and the run's tokenizer (W/tokenizer)."""
    data_config = ml_collections.ConfigDict(config.data.to_dict())
    data_config.dir = data_dir
    pipeline.check_config(data_config)
    splits = dict.fromkeys([*config.eval.splits, *training_eval_splits(config)])
    for name in (data_config.train, *splits):
        path = os.path.join(data_dir, name)
        if data_config.source == "json" and not os.path.isfile(path):
            raise ConfigError(
                f"data.train / eval.splits / *.train.eval_split: {path} does not exist"
            )
    train = pipeline.load_split(data_config, data_config.train)
    evals = {split_name(s): pipeline.load_split(data_config, s) for s in splits}
    tok = pipeline.prepare_tokenizer(
        data_config, train, save_dir=os.path.join(workdir, "tokenizer")
    )
    return Data(data_config, tok, train, evals)


# ----------------------------------------------------------------------------------------------
# Models.


def _config_json(config: models.T5Config | models.DecoderConfig) -> dict:
    fields = dataclasses.asdict(config)
    for name in ("dtype", "param_dtype", "logits_dtype"):
        fields[name] = jnp.dtype(fields[name]).name
    family = "t5" if isinstance(config, models.T5Config) else "decoder"
    return {"family": family, "fields": fields}


def _config_from_json(data: dict) -> models.T5Config | models.DecoderConfig:
    fields = dict(data["fields"])
    for name in ("dtype", "param_dtype", "logits_dtype"):
        fields[name] = jnp.dtype(fields[name])
    if fields.get("lora") is not None:
        lora = dict(fields["lora"])
        lora["targets"] = tuple(lora["targets"])
        fields["lora"] = models.LoRAConfig(**lora)
    if isinstance(fields.get("eos_token_id"), list):
        fields["eos_token_id"] = tuple(fields["eos_token_id"])
    cls = models.T5Config if data["family"] == "t5" else models.DecoderConfig
    return cls(**fields)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What model.json records: enough to rebuild the module and find its weights."""

    config: models.T5Config | models.DecoderConfig
    trainable: str  # "params" | "lora"
    base: str  # the HF checkpoint the frozen base params come from ("" : none)

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        data = {"model": _config_json(self.config), "trainable": self.trainable, "base": self.base}
        jsonio.write_json_atomic(os.path.join(directory, MODEL_FILE), data)

    @classmethod
    def load(cls, directory: str) -> ModelSpec:
        path = os.path.join(directory, MODEL_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            return cls(_config_from_json(data["model"]), data["trainable"], data["base"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}: not a kid model directory ({e})") from None

    @property
    def module(self):
        return models.build(self.config)


def is_kid_model_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MODEL_FILE))


def _numerics(config, section: ml_collections.ConfigDict):
    for field in ("dtype", "param_dtype"):
        if section[field] not in DTYPES:
            raise ConfigError(f"{field} {section[field]!r} is not one of {sorted(DTYPES)}")
    return dataclasses.replace(
        config, dtype=DTYPES[section.dtype], param_dtype=DTYPES[section.param_dtype]
    )


def _lora(config, section: ml_collections.ConfigDict):
    if section.lora_rank <= 0:
        return config
    lora = models.LoRAConfig(
        rank=section.lora_rank, alpha=section.lora_alpha, targets=tuple(section.lora_targets)
    )
    return dataclasses.replace(config, lora=lora)


def preset_config(section: ml_collections.ConfigDict, tok: tokenizer_lib.Tokenizer, name: str):
    """A preset sized for the tokenizer, with the section's overrides and numerics."""
    if section.preset not in models.CONFIGS:
        raise ConfigError(
            f"{name}.preset {section.preset!r} is not a model preset; known: {sorted(models.CONFIGS)}"
        )
    config = models.get_config(section.preset, **section.overrides.to_dict())
    bos = None if isinstance(config, models.T5Config) else tok.hf.bos_token_id
    config = model_configs.for_tokenizer(
        config, vocab_size=len(tok), pad_id=tok.pad_id, eos_id=tok.eos_id, bos_id=bos
    )
    return _lora(_numerics(config, section), section)


def _check_agrees(config, tok: tokenizer_lib.Tokenizer, name: str, path: str) -> None:
    try:
        model_configs.check_tokenizer_agrees(
            config,
            vocab_size=len(tok),
            pad_id=tok.pad_id,
            eos_id=tok.eos_id,
            decoder_start_id=tok.pad_id,
        )
    except ValueError as e:
        raise ConfigError(f"{name}.checkpoint {path}: {e}") from None


def load_checkpoint_model(section, tok, mesh, name: str) -> tuple[ModelSpec, dict]:
    """(spec, variables) of ``section.checkpoint``: an HF directory or a kid model directory."""
    path = section.checkpoint
    if not os.path.isdir(path):
        raise ConfigError(f"{name}.checkpoint {path!r} is not a directory")
    check_same_tokenizer(tok, path, name)
    if is_kid_model_dir(path):
        spec = ModelSpec.load(path)
        _check_agrees(spec.config, tok, name, path)
        return spec, restore_variables(spec, path, mesh)
    module, params = models.load_hf(path, mesh=mesh, param_dtype=DTYPES[section.param_dtype])
    config = _lora(_numerics(module.config, section), section)
    _check_agrees(config, tok, name, path)
    return ModelSpec(config, "lora" if config.lora else "params", path), {"params": params}


def restore_variables(spec: ModelSpec, directory: str, mesh, *, which: str = "latest") -> dict:
    """The variables of a kid model directory's checkpoint (the base from its HF directory
    when it trained LoRA adapters)."""
    module = spec.module
    variables = {}
    if spec.base:
        _, variables["params"] = models.load_hf(
            spec.base, mesh=mesh, param_dtype=spec.config.param_dtype
        )
    shapes, _ = models.param_axes(module, spec.trainable)
    shardings = models.shardings(module, mesh, collection=spec.trainable)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings
    )
    _, variables[spec.trainable] = checkpoints_lib.restore_params(
        os.path.join(directory, "checkpoints"), abstract, which=which
    )
    return variables


def initial_variables(spec: ModelSpec, mesh, seed: int, base: dict | None = None) -> dict:
    """Random initial variables of a spec (adapters only, on ``base``, for LoRA)."""
    module = spec.module
    rng = jax.random.key(seed)
    if spec.trainable == "lora":
        if base is None:
            params = models.init(module, jax.random.fold_in(rng, 1), mesh=mesh)
        else:
            params = base["params"]
        return {"params": params, "lora": models.init(module, rng, mesh=mesh, collection="lora")}
    return {"params": models.init(module, rng, mesh=mesh)}


def checkpoint_tokenizer_dir(path: str) -> str | None:
    """The tokenizer that came with a checkpoint: an HF directory's own files, or the
    workdir tokenizer of a kid model directory."""
    if is_kid_model_dir(path):
        other = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer")
        return other if os.path.isdir(other) else None
    has_files = any(
        os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json")
    )
    return path if has_files else None


def check_same_tokenizer(tok: tokenizer_lib.Tokenizer, path: str, name: str) -> None:
    """KD compares logits id by id: a checkpoint's tokenizer must match the run's."""
    other = checkpoint_tokenizer_dir(path)
    if other is None:
        return
    try:
        tokenizer_lib.check_same_base_vocabulary(tok, tokenizer_lib.load_tokenizer(other))
    except ValueError as e:
        raise ConfigError(
            f"{name}.checkpoint {path}: tokenizer differs from data.tokenizer: {e}"
        ) from None


def resolve_teachers(config: ml_collections.ConfigDict) -> None:
    """Model checkpoints and the tokenizer written ``data/teachers/<name>`` point to where
    that shipped teacher is installed (``kid.teachers.resolve``), from any folder."""
    for field in ("teacher.checkpoint", "student.checkpoint", "data.tokenizer"):
        section, key = field.split(".")
        if section in config and config[section].get(key):
            config[section][key] = teachers.resolve(config[section][key])


def uses_shipped_teacher(config: ml_collections.ConfigDict) -> bool:
    """Whether a stage of the run loads ``teacher.checkpoint`` as a shipped teacher."""
    loads = "teacher" in config.stages or (
        "student" in config.stages and config.get("method") != "sft"
    )
    section = config.get("teacher")
    return bool(loads and section and teachers.is_shipped(section.checkpoint))


def check_shipped_teacher(config: ml_collections.ConfigDict) -> None:
    """The benchmark a shipped teacher is used with must be the one it was trained on."""
    if not (uses_shipped_teacher(config) and "benchmark" in config.stages):
        return
    path = config.teacher.checkpoint
    try:
        teachers.check_benchmark_config(teachers.read_manifest(path), config.benchmark, path)
    except teachers.DigestError as e:
        raise ConfigError(str(e)) from None


def validate(config: ml_collections.ConfigDict, stages: Sequence[str]) -> None:
    """Refuses at start, naming the field, a config that would fail later."""
    unknown = [s for s in config.stages if s not in stages]
    if unknown:
        raise ConfigError(f"config.stages: unknown stage(s) {unknown}; known: {list(stages)}")
    if "benchmark" in config.stages:
        try:
            synth.check_databases(config.benchmark.databases, "benchmark.databases")
        except ValueError as e:
            raise ConfigError(str(e)) from None
    check_shipped_teacher(config)
    trains = {"teacher", "student", "baseline"} & set(config.stages)
    if not trains:
        return
    if "student" in config.stages and config.method not in methods.REGISTRY:
        raise ConfigError(f"method {config.method!r} is not one of {sorted(methods.REGISTRY)}")
    unknown_kd = sorted(set(config.kd) - set(kd_section()))
    if unknown_kd:
        raise ConfigError(f"kd: unknown option(s) {unknown_kd}")
    make_mesh(config)
    for name in ("teacher", "student"):
        section = config[name]
        if section.checkpoint and not os.path.isdir(section.checkpoint):
            raise ConfigError(f"{name}.checkpoint {section.checkpoint!r} is not a directory")
        if not section.checkpoint and section.preset not in models.CONFIGS:
            raise ConfigError(
                f"{name}.preset {section.preset!r} is not a model preset (or set {name}.checkpoint)"
            )
        if section.train.steps or name == "student":
            try:
                train.learning_rate_schedule(section.train)
            except ValueError as e:
                raise ConfigError(f"{name}.{e}") from None
