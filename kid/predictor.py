"""A trained model ready to predict SQL: a kid workdir's model or a local Hugging Face
directory, with the tokenizer, prompt settings and decoding settings it was evaluated with.

    model = load("workdir/demo", "student")           # or load("hf_dir")
    sql = model.decoder(mesh).predict(model.variables, batches, split, model.tok)

A workdir model is the checkpoint the report evaluated (its last step) with the run's
``data`` and ``eval`` settings (``W/config.json``, written by ``kid.main``). A Hugging Face
directory written by ``kid.export`` carries the same settings in ``kid_inference.json``; any
other T5 / Llama / Qwen2 directory gets the defaults of its family.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections

from kid import inference, job, models, sharding
from kid.data import batching, pipeline
from kid.data import tokenizer as tokenizer_lib

SETTINGS_FILE = "kid_inference.json"  # beside an exported model's config.json
MODEL_NAMES = ("student", "teacher", "baseline")
# The `data` fields that decide a model's prompts and decoding budget.
DATA_FIELDS = (
    "prompt_style",
    "layout",
    "use_evidence",
    "num_sample_values",
    "max_sample_chars",
    "max_matched_values",
    "prompt_buckets",
    "target_buckets",
    "eval_batch_size",
)
DECODE_FIELDS = ("method", "num_beams")


class PredictError(ValueError):
    """A model or input that cannot be used; the message names the path or field."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Prompt and decoding settings: ``data`` holds DATA_FIELDS, ``decoding`` DECODE_FIELDS."""

    data: dict[str, Any]
    decoding: dict[str, Any]

    def to_json(self) -> dict:
        return {
            "data": self.data,
            "decoding": {**self.decoding, "max_new_tokens": max(self.data["target_buckets"])},
        }

    @classmethod
    def from_json(cls, data: dict, where: str) -> Settings:
        try:
            settings = cls(
                {k: data["data"][k] for k in DATA_FIELDS},
                {k: data["decoding"][k] for k in DECODE_FIELDS},
            )
        except (KeyError, TypeError) as e:
            raise PredictError(f"{where}: missing field {e}") from None
        try:
            pipeline.check_config(settings.data_config(""))
        except ValueError as e:
            raise PredictError(f"{where}: {e}") from None
        return settings

    @classmethod
    def defaults(cls, config: models.T5Config | models.DecoderConfig) -> Settings:
        """The pipeline's defaults for a model of ``config``'s family (greedy decoding)."""
        data = pipeline.default_config()
        if isinstance(config, models.T5Config):
            data.layout, data.prompt_style = batching.ENCODER_DECODER, "t5"
        return cls({k: _plain(data[k]) for k in DATA_FIELDS}, {"method": "greedy", "num_beams": 4})

    def data_config(self, data_dir: str) -> ml_collections.ConfigDict:
        """A ``data`` config reading Spider-format files from ``data_dir``."""
        config = pipeline.default_config()
        config.update({k: tuple(v) if isinstance(v, list) else v for k, v in self.data.items()})
        config.dir = data_dir
        config.tokenizer = "model"  # the model's own: never trained or loaded from here
        return config


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def settings_of_run(run_config: dict, where: str) -> Settings:
    """A workdir run config's (``W/config.json``) prompt and decoding settings."""
    try:
        return Settings.from_json(
            {"data": run_config["data"], "decoding": run_config["eval"]}, where
        )
    except (KeyError, TypeError) as e:
        raise PredictError(f"{where}: missing section {e}") from None


@dataclasses.dataclass
class Model:
    """A model to predict with: module, variables, tokenizer and settings."""

    spec: job.ModelSpec
    variables: dict
    tok: tokenizer_lib.Tokenizer
    settings: Settings
    source: str  # the directory it was loaded from
    step: int | None = None  # a workdir model's training step

    @property
    def module(self):
        return self.spec.module

    @property
    def decoder_start_id(self) -> int | None:
        return getattr(self.spec.config, "decoder_start_token_id", None)

    def decode_options(self, **overrides) -> inference.DecodeOptions:
        """The evaluated decoding (greedy or beam, the target budget), with ``overrides``."""
        options = dict(
            max_new_tokens=max(self.settings.data["target_buckets"]),
            eos_id=self.tok.eos_id,
            pad_id=self.tok.pad_id,
            vocab_size=len(self.tok),
            **self.settings.decoding,
        )
        options.update(overrides)
        return inference.DecodeOptions(**options)

    def decoder(self, mesh, **overrides) -> inference.SplitDecoder:
        return inference.SplitDecoder(self.module, mesh, self.decode_options(**overrides))


def default_mesh() -> jax.sharding.Mesh:
    return sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})


def is_workdir(path: str) -> bool:
    """A kid.main workdir: its tokenizer folder, or a model directory, is there."""
    return os.path.isdir(os.path.join(path, "tokenizer")) or any(
        os.path.isfile(os.path.join(path, name, job.MODEL_FILE)) for name in MODEL_NAMES
    )


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise PredictError(f"{path}: cannot read ({e})") from None


def load(path: str, model_name: str = "student", *, mesh=None) -> Model:
    """The model at ``path``: a kid workdir (``model_name`` picks its model) or a local
    Hugging Face directory (config.json + safetensors)."""
    if not os.path.isdir(path):
        raise PredictError(f"--model {path}: not a directory (a kid workdir or an HF directory)")
    mesh = mesh or default_mesh()
    if is_workdir(path):
        return _load_workdir(path, model_name, mesh)
    if os.path.isfile(os.path.join(path, "config.json")):
        return _load_hf(path, mesh)
    raise PredictError(
        f"--model {path}: neither a kid workdir (tokenizer/, config.json) nor a Hugging Face "
        "directory (config.json + safetensors)"
    )


def _load_workdir(workdir: str, model_name: str, mesh) -> Model:
    if model_name not in MODEL_NAMES:
        raise PredictError(f"--model-name {model_name!r} is not one of {MODEL_NAMES}")
    directory = os.path.join(workdir, model_name)
    done_path = os.path.join(directory, job.DONE_FILE)
    if not os.path.isfile(done_path):
        state = "has not finished training" if os.path.isdir(directory) else "was not trained"
        raise PredictError(
            f"{workdir}: model {model_name!r} {state} ({done_path} missing); finish it with "
            "kid.main, or pick another with --model-name"
        )
    config_path = os.path.join(workdir, job.RUN_CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise PredictError(
            f"{config_path} missing: run the same kid.main command on {workdir} once more "
            "(finished stages are skipped) to record the run's settings"
        )
    settings = settings_of_run(_read_json(config_path), config_path)
    try:
        spec = job.ModelSpec.load(directory)
        tok = tokenizer_lib.load_tokenizer(os.path.join(workdir, "tokenizer"))
        variables = job.restore_variables(spec, directory, mesh)
    except (job.ConfigError, tokenizer_lib.TokenizerError) as e:
        raise PredictError(str(e)) from None
    step = _read_json(done_path).get("steps")
    return Model(spec, variables, tok, settings, directory, step)


def _load_hf(path: str, mesh) -> Model:
    try:
        module, params = models.load_hf(path, mesh=mesh)
        tok = tokenizer_lib.load_tokenizer(path)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise PredictError(f"--model {path}: {e}") from None
    settings_path = os.path.join(path, SETTINGS_FILE)
    if os.path.isfile(settings_path):
        settings = Settings.from_json(_read_json(settings_path), settings_path)
    else:
        settings = Settings.defaults(module.config)
    spec = job.ModelSpec(module.config, "params", path)
    return Model(spec, {"params": params}, tok, settings, path)
