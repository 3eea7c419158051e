"""The main job's stages (CONTRACT 5): train or load the teacher, distil the student, train
the SFT baseline, evaluate them, report.

Each stage reads and fills the run's ``report`` dict and leaves its results in the workdir,
so running the same command again skips what is finished: a model whose ``done.json``
exists is loaded, not retrained; a model interrupted mid-training resumes from its latest
checkpoint; an evaluation already written for the same checkpoint step is reused.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from kid import checkpoints as checkpoints_lib
from kid import inference, job, loop, methods, models, teachers, train
from kid import report as report_lib
from kid.data import encoding, grouping, jsonio, pipeline
from kid.models import forward as fwd
from kid.sql import sql_files

Report = dict[str, Any]
MODEL_NAMES = ("teacher", "baseline", "student")


@dataclasses.dataclass
class Run:
    """One invocation of the main job: config, workdir, mesh, and what stages share."""

    config: ml_collections.ConfigDict
    workdir: str
    report: Report
    mesh: jax.sharding.Mesh
    data_dir: str = ""
    _data: job.Data | None = None
    models: dict[str, tuple[job.ModelSpec, dict]] = dataclasses.field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0

    @property
    def data(self) -> job.Data:
        if self._data is None:
            self._data = job.load_data(self.config, self.data_dir, self.workdir)
            tok = self._data.tok
            logging.info("tokenizer: %d tokens (%d added)", len(tok), tok.num_added)
        return self._data

    def model_dir(self, name: str) -> str:
        return os.path.join(self.workdir, name)


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _param_count(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------------------------
# Training one model.


def _kd_config(run: Run, method: str, spec: job.ModelSpec, teacher) -> methods.KDConfig:
    tok = run.data.tok
    options = run.config.kd.to_dict() if method != "sft" else {}
    options["dropout"] = _dropout_rate(spec.config) > 0  # the config's rate, in training
    return methods.KDConfig(
        method=method,
        student=spec.module,
        teacher=None if method == "sft" else teacher[0].module,
        trainable=spec.trainable,
        vocab_size=len(tok),
        pad_id=tok.pad_id,
        eos_id=tok.eos_id,
        mask_id=tok.mask_id if method in ("kid", "kid_cascade") else None,
        **options,
    )


def _dropout_rate(config) -> float:
    return getattr(config, "dropout_rate", getattr(config, "attention_dropout", 0.0))


def _scores(verdicts) -> dict:
    summary = report_lib.summarize_verdicts(verdicts)
    return {k: summary[k] for k in ("ex", "em", "ts")}


def _chain(future: concurrent.futures.Future, fn) -> concurrent.futures.Future:
    out: concurrent.futures.Future = concurrent.futures.Future()

    def done(f):
        try:
            out.set_result(fn(f.result()))
        except Exception as e:  # noqa: BLE001 - the scorer's failure reaches the loop
            out.set_exception(e)

    future.add_done_callback(done)
    return out


def _decoder(run: Run, module, options: pipeline.BatchOptions) -> inference.SplitDecoder:
    tok = run.data.tok
    decode = inference.DecodeOptions(
        max_new_tokens=pipeline.max_new_tokens(options),
        eos_id=tok.eos_id,
        pad_id=tok.pad_id,
        vocab_size=len(tok),
        method=run.config.eval.method,
        num_beams=run.config.eval.num_beams,
    )
    return inference.SplitDecoder(module, run.mesh, decode)


def _eval_batches(run: Run, split: str, module):
    data = run.data
    start = getattr(module.config, "decoder_start_token_id", None)
    batches, encoded = pipeline.build(
        data.config, data.evals[split], data.tok, train=False, decoder_start_id=start
    )
    return (
        batches,
        encoded,
        pipeline.batch_options(data.config, data.tok, train=False, decoder_start_id=start),
    )


def _scorer(run: Run, split: str):
    data = run.data
    return inference.make_scorer(
        data.evals[split],
        inference.merged_schemas([data.train, *data.evals.values()]),
        ts_dir=run.config.eval.ts_dir,
        workers=run.config.eval.workers,
        timeout=run.config.eval.timeout,
    )


def _build_spec(run: Run, name: str, section) -> tuple[job.ModelSpec, dict]:
    tok = run.data.tok
    if section.checkpoint:
        return job.load_checkpoint_model(section, tok, run.mesh, name)
    config = job.preset_config(section, tok, name)
    spec = job.ModelSpec(config, "lora" if config.lora else "params", "")
    return spec, job.initial_variables(spec, run.mesh, run.config.seed)


def train_model(
    run: Run, name: str, section, method: str, teacher: tuple | None = None
) -> tuple[job.ModelSpec, dict]:
    """Trains model ``name`` with ``method`` (resuming, or loading it when finished)."""
    directory = run.model_dir(name)
    done = _read_json(os.path.join(directory, job.DONE_FILE))
    if done is not None:
        spec = job.ModelSpec.load(directory)
        variables = job.restore_variables(spec, directory, run.mesh)
        run.report["models"][name] = done
        return spec, variables
    spec, variables = _build_spec(run, name, section)
    if run.is_main:
        spec.save(directory)
    kd = _kd_config(run, method, spec, teacher)
    trainable, frozen_student = fwd.split_variables(variables, spec.trainable)
    frozen = {"student": frozen_student}
    frozen_sharding = {
        "student": {
            k: models.shardings(spec.module, run.mesh, collection=k) for k in frozen_student
        }
    }
    if method != "sft":
        frozen["teacher"] = teacher[1]
        frozen_sharding["teacher"] = {"params": models.shardings(teacher[0].module, run.mesh)}
    tx = train.optimizer(section.train)
    params_sharding = models.shardings(spec.module, run.mesh, collection=spec.trainable)
    state_sharding = train.state_shardings(params_sharding, tx, trainable, run.mesh)
    state = jax.jit(lambda p, r: train.init_state(p, tx, r), out_shardings=state_sharding)(
        trainable, jax.random.key(section.train.seed)
    )
    step = train.TrainStep(
        methods.loss_fn(kd),
        tx,
        run.mesh,
        state_sharding,
        frozen_sharding,
        micro_batches=section.train.micro_batches,
        name=name,
    )
    data = run.data
    start_id = getattr(spec.config, "decoder_start_token_id", None)
    batches, encoded = pipeline.build(
        data.config, data.fit, data.tok, train=True, decoder_start_id=start_id
    )
    options = pipeline.batch_options(data.config, data.tok, train=True, decoder_start_id=start_id)
    shapes = grouping.split_shapes(encoded, options, train=True)
    print(
        f"{name}: {method}, {_param_count(trainable):,} trainable params, "
        f"{section.train.steps} steps, {len(shapes)} batch shapes; "
        f"train data: {encoding.format_report(encoded.report)}"
    )
    evaluate, scorer = None, None
    if section.train.eval_every:
        split = job.split_name(section.train.eval_split or run.config.eval.splits[0])
        eval_batches, eval_split, eval_options = _eval_batches(run, split, spec.module)
        decoder = _decoder(run, spec.module, eval_options)
        scorer = _scorer(run, split) if run.is_main else None
        limit = section.train.eval_examples or None

        def evaluate(params, at: int) -> concurrent.futures.Future:
            del at
            sql = decoder.predict(
                fwd.join_variables(params, frozen_student, spec.trainable),
                iter(eval_batches),
                eval_split,
                data.tok,
                limit=limit,
            )
            if scorer is None:
                resolved = concurrent.futures.Future()
                resolved.set_result({})
                return resolved
            return _chain(scorer.submit(inference.golds(eval_split, limit), sql), _scores)

    checkpoints = checkpoints_lib.Checkpoints(
        os.path.join(directory, "checkpoints"), keep=section.train.keep
    )
    progress_path = os.path.join(directory, "progress.json")
    earlier_s = (_read_json(progress_path) or {}).get("train_s", 0.0)
    started = time.perf_counter()
    try:
        result = loop.fit(
            state=state,
            state_sharding=state_sharding,
            frozen=frozen,
            step_fn=step,
            iterator=pipeline.iterator(batches, data.config),
            config=section.train,
            checkpoints=checkpoints,
            log_dir=directory,
            evaluate=evaluate,
            name=name,
            is_main=run.is_main,
        )
    finally:
        if run.is_main:
            jsonio.write_json_atomic(
                progress_path, {"train_s": earlier_s + time.perf_counter() - started}
            )
        checkpoints.close()
        if scorer is not None:
            scorer.close()
    done = {
        "params": _param_count(variables["params"]),
        "trainable_params": _param_count(trainable),
        "method": method,
        "steps": int(result.state.step),
        "train_s": earlier_s + time.perf_counter() - started,
        "tokens": result.tokens,
        "compiles": step.compiles,
        "compile_s": step.compile_s,
        "batch_shapes": len(shapes),
        "best": checkpoints.best(),
        "checkpoint": os.path.join(directory, "checkpoints"),
    }
    if result.restored_step is not None:
        done["restored_step"] = result.restored_step
    print(
        f"{name}: {done['steps']} steps, {done['train_s']:.0f} s, {result.tokens:,.0f} tokens, "
        f"{step.compiles} compiles ({step.compile_s:.0f} s)"
    )
    if run.is_main:
        jsonio.write_json_atomic(os.path.join(directory, job.DONE_FILE), done)
    run.report["models"][name] = done
    variables = fwd.join_variables(result.state.params, frozen_student, spec.trainable)
    return spec, variables


# ----------------------------------------------------------------------------------------------
# Stages.


def _check_shipped_teacher(run: Run, path: str) -> None:
    """A shipped teacher's training file and tokenizer digests must match this run's."""
    if not teachers.is_shipped(path):
        return
    train_file = os.path.join(run.data_dir, run.config.data.train)
    try:
        teachers.check_files(teachers.read_manifest(path), train_file, run.data.tok, path)
    except teachers.DigestError as e:
        raise job.ConfigError(str(e)) from None


def teacher(run: Run) -> None:
    section = run.config.teacher
    if section.checkpoint and section.train.steps == 0:
        _check_shipped_teacher(run, section.checkpoint)
        spec, variables = job.load_checkpoint_model(section, run.data.tok, run.mesh, "teacher")
        run.report["models"]["teacher"] = {
            "params": _param_count(variables["params"]),
            "steps": 0,
            "train_s": 0.0,
            "tokens": 0,
            "checkpoint": section.checkpoint,
        }
        run.models["teacher"] = (spec, variables)
        return
    run.models["teacher"] = train_model(run, "teacher", section, "sft")


def _teacher(run: Run) -> tuple:
    if "teacher" not in run.models:
        teacher(run)
    return run.models["teacher"]


def student(run: Run) -> None:
    """The student by the run's method; an SFT student never loads or trains a teacher."""
    run.report["method"] = run.config.method
    teacher_model = None if run.config.method == "sft" else _teacher(run)
    run.models["student"] = train_model(
        run, "student", run.config.student, run.config.method, teacher_model
    )


def baseline(run: Run) -> None:
    run.models["baseline"] = train_model(run, "baseline", run.config.student, "sft")


def _evaluate_model(run: Run, name: str, split: str) -> dict:
    """A model's summary on a split. W/<model>/eval/ keeps it (<split>.json, by checkpoint
    step) with the predictions (<split>.sql) and the per-example verdicts (<split>.jsonl,
    `kid.evaluate --per-example`'s format, for the report's paired comparison); a cached
    summary is reused only beside its verdicts, else the split is decoded and scored again."""
    spec, variables = run.models[name]
    step = run.report["models"][name].get("steps", 0)
    cache = os.path.join(run.model_dir(name), "eval", f"{split}.json")
    per_example = report_lib.verdicts_path(run.workdir, name, split)
    cached = _read_json(cache)
    if cached is not None and cached.get("step") == step and os.path.isfile(per_example):
        return cached["summary"]
    batches, encoded, options = _eval_batches(run, split, spec.module)
    start = time.perf_counter()
    sql = _decoder(run, spec.module, options).predict(
        variables, iter(batches), encoded, run.data.tok
    )
    decode_s = time.perf_counter() - start
    summary: dict = {}
    if run.is_main:
        with _scorer(run, split) as scorer:
            verdicts = scorer.score(inference.golds(encoded), sql)
        summary = report_lib.summarize_verdicts(verdicts)
        summary["decode_s"] = decode_s
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(os.path.join(os.path.dirname(cache), f"{split}.sql"), "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in sql))
        sql_files.write_jsonl(per_example, (v.to_json() for v in verdicts))
        jsonio.write_json_atomic(cache, {"step": step, "summary": summary})  # last: the cache
    return summary


def evaluate(run: Run) -> None:
    """Every trained (or loaded) model on every configured split."""
    for name in MODEL_NAMES:
        if name not in run.models and os.path.isfile(
            os.path.join(run.model_dir(name), job.DONE_FILE)
        ):
            section = run.config.teacher if name == "teacher" else run.config.student
            method = "sft" if name != "student" else run.config.method
            run.models[name] = train_model(run, name, section, method, run.models.get("teacher"))
    evals = run.report.setdefault("eval", {})
    reported = [job.split_name(s) for s in run.config.eval.splits]  # not val_in_domain
    for name in MODEL_NAMES:
        if name not in run.models:
            continue
        for split in reported:
            summary = _evaluate_model(run, name, split)
            evals.setdefault(name, {})[split] = summary
            if summary:
                print(
                    f"{name} on {split}: EX {summary['ex']:.1%}  EM {summary['em']:.1%}  n {summary['n']}"
                )


def write_report(run: Run) -> None:
    if run.is_main:
        report_lib.write_report(run.workdir, run.report)
