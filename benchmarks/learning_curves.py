"""Dev EX against step, and final EX, of models trained by the main job: the figures of
docs/RESULTS.md, read back from their workdirs.

  python benchmarks/learning_curves.py workdir/exp/teacher workdir/exp/sft_s*

For each model of each workdir (W/<model>/metrics.jsonl) it prints the scores logged while
training (on the first `eval_examples` of `eval_split`, from W/config.json), then what the
eval stage measured on whole splits (W/<model>/eval/<split>.json) and how its predictions
(W/<model>/eval/<split>.sql) use the schema: "own" counts predictions whose identifiers all
belong to the example's database, "foreign" those naming an identifier that only other
databases have (a schema learnt by heart instead of read from the prompt). Models that
share a name across workdirs (seeds of one recipe) get a last line per split: mean, min
and max EX.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys

MODELS = ("teacher", "student", "baseline")
TERMS = ("loss", "ce", "kd", "grad_norm", "teacher_ce", "teacher_agree", "teacher_entropy")
_LITERAL = re.compile(r"\"[^\"]*\"|'[^']*'")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def term_means(workdir: str, model: str, share: float = 0.2) -> dict[str, tuple[float, float]]:
    """{term: (mean over the first `share` of logged steps, mean over the last)}, for the
    loss terms and the teacher's wiring checks a method logs (absent terms are left out)."""
    path = os.path.join(workdir, model, "metrics.jsonl")
    if not os.path.isfile(path):
        return {}
    records = sorted(
        (r for r in _read_jsonl(path) if "loss" in r and not r.get("restored")),
        key=lambda r: r["step"],
    )
    k = max(1, round(share * len(records)))
    out = {}
    for term in TERMS:
        first = [r[term] for r in records[:k] if r.get(term) is not None]
        last = [r[term] for r in records[-k:] if r.get(term) is not None]
        if first and last:
            out[term] = (sum(first) / len(first), sum(last) / len(last))
    return out


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


def _config(workdir: str) -> dict:
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _train_section(workdir: str, model: str) -> dict:
    return _config(workdir).get("student" if model != "teacher" else "teacher", {}).get("train", {})


def _identifiers(entry: dict) -> set[str]:
    names = entry["table_names_original"] + [c for _, c in entry["column_names_original"][1:]]
    return {n.lower() for n in names}


def schema_use(workdir: str, model: str, split: str) -> tuple[int, int, int] | None:
    """(own, foreign, n) over a split's predictions, or None without the files."""
    config = _config(workdir)
    data_dir = config.get("data", {}).get("dir") or config.get("benchmark", {}).get("dir")
    data_dir = data_dir or os.path.join(workdir, "benchmark")
    sql_path = os.path.join(workdir, model, "eval", f"{split}.sql")
    split_path = os.path.join(data_dir, f"{split}.json")
    if not all(os.path.isfile(p) for p in (sql_path, split_path)):
        return None
    with open(os.path.join(data_dir, "tables.json"), encoding="utf-8") as f:
        schemas = {e["db_id"]: _identifiers(e) for e in json.load(f)}
    with open(split_path, encoding="utf-8") as f:
        db_ids = [r["db_id"] for r in json.load(f)]
    with open(sql_path, encoding="utf-8") as f:
        predictions = [line.split("\t")[0] for line in f.read().splitlines()]
    everywhere = set().union(*schemas.values())
    own = foreign = 0
    for db_id, sql in zip(db_ids, predictions, strict=True):
        words = {w.lower() for w in _WORD.findall(_LITERAL.sub(" ", sql))}
        mine = schemas[db_id]
        named = words & everywhere
        own += bool(named) and named <= mine
        foreign += bool(named - mine)
    return own, foreign, len(predictions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument(
        "--terms",
        action="store_true",
        help="also the logged loss terms, gradient norm and teacher checks (first / last 20%%)",
    )
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
            if args.terms:
                for term, (first, last) in term_means(workdir, model).items():
                    print(f"  {term:<16} first 20% {first:8.4f}   last 20% {last:8.4f}")
            for split, s in ends.items():
                print(
                    f"  {split:<18} n={s['n']:<5} step {s['step']:>6}  EX {_pct(s['ex'])}"
                    f"  TS {_pct(s['ts'])}  EM {_pct(s['em'])}  errors {s.get('errors', {})}"
                )
                use = schema_use(workdir, model, split)
                if use is not None:
                    own, foreign, n = use
                    print(f"{'':20} schema use: own {own} of {n}, foreign {foreign} of {n}")
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
