"""Dev EX against step, and final EX, of models trained by the main job: the figures of
docs/RESULTS.md, read back from their workdirs.

  python benchmarks/learning_curves.py workdir/exp/teacher workdir/exp/sft_s*

For each model of each workdir (W/<model>/metrics.jsonl) it prints the scores logged while
training (on the first `eval_examples` of `eval_split`, from W/config.json), then what the
eval stage measured on whole splits (W/<model>/eval/<split>.json). Models that share a name
across workdirs (seeds of one recipe) get a last line per split: mean, min and max EX.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

MODELS = ("teacher", "student", "baseline")


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a run that was stopped
    return rows


def _pct(value: float | None) -> str:
    return "    -" if value is None else f"{100 * value:5.1f}"


def curve(workdir: str, model: str) -> list[dict]:
    """The metrics lines of one model that carry dev scores, in step order."""
    path = os.path.join(workdir, model, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    return sorted((r for r in _read_jsonl(path) if "ex" in r), key=lambda r: r["step"])


def finals(workdir: str, model: str) -> dict[str, dict]:
    """{split: summary} of the eval stage's whole-split scores."""
    folder = os.path.join(workdir, model, "eval")
    out = {}
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    cached = json.load(f)
                out[name[: -len(".json")]] = {"step": cached["step"], **cached["summary"]}
    return out


def _train_section(workdir: str, model: str) -> dict:
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    return config.get("student" if model != "teacher" else "teacher", {}).get("train", {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+")
    args = parser.parse_args(argv)
    by_model: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for workdir in args.workdirs:
        for model in MODELS:
            points, ends = curve(workdir, model), finals(workdir, model)
            if not points and not ends:
                continue
            train = _train_section(workdir, model)
            print(f"{workdir}  {model}")
            if points:
                split = train.get("eval_split", "dev")
                n = train.get("eval_examples", "all")
                print(f"  while training ({split}, first {n}):   step     EX     TS     EM")
                for r in points:
                    row = f"{r['step']:>6}  {_pct(r.get('ex'))}  {_pct(r.get('ts'))}"
                    print(f"{'':38}{row}  {_pct(r.get('em'))}")
            for split, s in ends.items():
                print(
                    f"  {split:<18} n={s['n']:<5} step {s['step']:>6}  EX {_pct(s['ex'])}"
                    f"  TS {_pct(s['ts'])}  EM {_pct(s['em'])}  errors {s.get('errors', {})}"
                )
                if s["ex"] is not None:
                    by_model[model, split].append(s["ex"])
    for (model, split), values in sorted(by_model.items()):
        if len(values) > 1:
            mean = sum(values) / len(values)
            print(
                f"{model} {split}: mean EX {_pct(mean)} over {len(values)} runs "
                f"(min {_pct(min(values))}, max {_pct(max(values))})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
