"""Export a trained model of a kid workdir as a Hugging Face directory (CONTRACT 9).

  python -m kid.export --workdir W --out HF_DIR [--model-name student] [--manifest]

HF_DIR gets what transformers loads (config.json, model.safetensors with LoRA adapters
merged, the tokenizer files, generation_config.json with greedy defaults and the decoding
budget) and kid's prompt and decoding settings (``kid_inference.json``: prompt style, token
budget, sample and matched values, max new tokens), so ``kid.predict --model HF_DIR`` builds
the same prompts and gives the same SQL as ``--model W``. The directory is written under a
temporary name and renamed into place: an interrupted export leaves no half directory.

Exit status 0 on success, 2 when the workdir has no finished model (the message says why).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Sequence

from kid import models, predictor, teachers
from kid.data import jsonio
from kid.data import tokenizer as tokenizer_lib


def generation_config(model: predictor.Model) -> dict:
    """transformers' generation defaults: the evaluated decoding and its token budget."""
    config = model.spec.config
    decoding = model.settings.decoding
    out = {
        "max_new_tokens": max(model.settings.data["target_buckets"]),
        "do_sample": False,
        "num_beams": decoding["num_beams"] if decoding["method"] == "beam" else 1,
        "eos_token_id": model.tok.eos_id,
        "pad_token_id": model.tok.pad_id,
    }
    if isinstance(config, models.T5Config):
        out["decoder_start_token_id"] = config.decoder_start_token_id
    elif config.bos_token_id is not None:
        out["bos_token_id"] = config.bos_token_id
    return out


def export(
    workdir: str, out: str, model_name: str = "student", *, manifest: bool = False
) -> pathlib.Path:
    """Writes model ``model_name`` of ``workdir`` to ``out`` (replaced if it exists); with
    ``manifest``, also the shipped teacher's manifest.json (``kid.teachers``)."""
    model = predictor.load(workdir, model_name)
    shipped = teachers.build_manifest(workdir, model_name, model.tok) if manifest else None
    target = pathlib.Path(out).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        hf_dir = models.save_hf(
            model.module,
            model.variables["params"],
            staging / "model",
            lora=model.variables.get("lora"),
        )
        tokenizer_lib.write_tokenizer_files(model.tok, hf_dir)
        jsonio.write_json_atomic(hf_dir / "generation_config.json", generation_config(model))
        settings = {**model.settings.to_json(), "source": model.source, "step": model.step}
        jsonio.write_json_atomic(hf_dir / predictor.SETTINGS_FILE, settings)
        if shipped is not None:
            jsonio.write_json_atomic(hf_dir / teachers.MANIFEST, shipped)
        if target.exists():
            target.rename(staging / "replaced")
        hf_dir.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kid.export", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workdir", required=True, help="a kid.main workdir")
    parser.add_argument("--out", required=True, help="the Hugging Face directory to write")
    parser.add_argument("--model-name", default="student", choices=predictor.MODEL_NAMES)
    parser.add_argument(
        "--manifest",
        action="store_true",
        help="also write manifest.json (a shipped teacher: command, config, scores, digests)",
    )
    args = parser.parse_args(argv)
    if not predictor.is_workdir(args.workdir):
        print(f"error: --workdir {args.workdir}: not a kid workdir", file=sys.stderr)
        return 2
    try:
        path = export(args.workdir, args.out, args.model_name, manifest=args.manifest)
    except (predictor.PredictError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"exported": str(path), "model": args.model_name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
