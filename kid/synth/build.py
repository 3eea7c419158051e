"""Writes the whole benchmark (CONTRACT 2) into a folder, atomically.

Everything is built in a temporary sibling folder and renamed into place at the end,
so a crash leaves either the previous benchmark or the new one, never half of one.
Every random choice flows from `seed` through named `random.Random` streams (string
seeds hash the same in every process), and sqlite files are written with
`VACUUM INTO`: the same seed gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from kid.data import schema as schema_lib
from kid.synth import constructs, database, domains, grammar, splits, testsuite, variants

MANIFEST = "synth.json"
HELD_OUT_SHARE = 0.15  # of each dev split, at least, uses a construct pair held out of train
DATABASES = (100, 20)  # train, dev: renamed variants of the train and dev domains


@dataclasses.dataclass(frozen=True)
class Sizes:
    train: int = 6000
    dev: int = 600
    dev_in_domain: int = 600
    val_in_domain: int = 300  # for choices while training; never reported

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The split sizes' field names, in order (a config's benchmark section uses them)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls, text: str) -> Sizes:
        """ "TRAIN,DEV,DEV_IN_DOMAIN[,VAL_IN_DOMAIN]", e.g. "6000,600,600,300"."""
        form = "TRAIN,DEV,DEV_IN_DOMAIN[,VAL_IN_DOMAIN]"
        n = 4 if text.count(",") == 3 else 3
        return cls(*positive_ints(text, n, "--size", form))


def positive_ints(text: str, n: int, flag: str, form: str) -> tuple[int, ...]:
    parts = text.split(",")
    if len(parts) != n or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"{flag} wants {n} positive integers {form}, got {text!r}")
    return tuple(int(p) for p in parts)


def check_databases(counts: Sequence[int], field: str) -> tuple[int, int]:
    """(train, dev) database counts, each at least its split's domain count: `variants`
    deals databases to domains round-robin, and a domain without one would vanish."""
    counts = tuple(counts)
    if len(counts) != 2 or not all(isinstance(c, int) for c in counts):
        raise ValueError(f"{field} wants two integers (train, dev), got {counts!r}")
    pools = {"train": domains.TRAIN_DOMAINS, "dev": domains.DEV_DOMAINS}
    for count, (split, pool) in zip(counts, pools.items(), strict=True):
        if count < len(pool):
            raise ValueError(
                f"{field}: {count} {split} databases for {len(pool)} domains: "
                "every domain needs one"
            )
    return counts


def parse_databases(text: str) -> tuple[int, int]:
    """ "TRAIN,DEV" database counts, e.g. "100,20"."""
    return check_databases(positive_ints(text, 2, "--databases", "TRAIN,DEV"), "--databases")


def _dump_json(value: Any, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _stream(seed: int, *names: object) -> random.Random:
    return random.Random("/".join(map(str, (seed, *names))))


def _databases(
    folder: str, seed: int, domain_list: Sequence[domains.Domain]
) -> tuple[list[grammar.Context], dict[str, database.Rows]]:
    """Writes database/ for the domains; contexts on the main copies and their rows."""
    contexts, rows = [], {}
    for d in domain_list:
        rows[d.db_id] = database.populate(d, _stream(seed, "db", d.db_id))
        conn = database.connect(d, rows[d.db_id])
        database.write(conn, schema_lib.db_file(os.path.join(folder, "database"), d.db_id))
        contexts.append(grammar.Context(d, conn))
    return contexts, rows


def _test_suites(
    folder: str,
    seed: int,
    domain_list: Sequence[domains.Domain],
    rows: dict[str, database.Rows],
    queries: dict[str, list[str]],
    ts_copies: int,
) -> None:
    """Writes database_ts/: copies that keep the rows the queries' literals name."""
    for d in domain_list:
        literals = testsuite.string_literals(queries.get(d.db_id, ()))
        for k in range(1, ts_copies + 1):
            varied = testsuite.vary(d, rows[d.db_id], literals, _stream(seed, "ts", d.db_id, k))
            copy = database.connect(d, varied)
            database.write(
                copy, os.path.join(folder, "database_ts", d.db_id, f"{d.db_id}_{k}.sqlite")
            )
            copy.close()


def _write_benchmark(
    folder: str, seed: int, sizes: Sizes, ts_copies: int, counts: tuple[int, int]
) -> None:
    train_domains, dev_domains = (
        variants.databases(pool, n, lambda db_id: _stream(seed, "variant", db_id))
        for pool, n in zip((domains.TRAIN_DOMAINS, domains.DEV_DOMAINS), counts, strict=True)
    )
    all_domains = train_domains + dev_domains
    entries = [database.tables_entry(d) for d in all_domains]
    names = {e["db_id"]: schema_lib.schema_from_json(e).lowercase_names() for e in entries}
    contexts, rows = _databases(folder, seed, all_domains)
    train_ctx, dev_ctx = contexts[: len(train_domains)], contexts[len(train_domains) :]
    seen = splits.Seen()
    queries: dict[str, list[str]] = {}
    plan = (
        ("train.json", train_ctx, sizes.train, None),
        ("dev_in_domain.json", train_ctx, sizes.dev_in_domain, HELD_OUT_SHARE),
        ("dev.json", dev_ctx, sizes.dev, HELD_OUT_SHARE),
        # Last, so the earlier splits are the same with or without it: unseen questions on
        # the training databases, drawn like dev_in_domain, for choosing recipes.
        ("val_in_domain.json", train_ctx, sizes.val_in_domain, HELD_OUT_SHARE),
    )
    for filename, ctxs, n, held_out_share in plan:
        rng = _stream(seed, "split", filename)
        records = splits.generate(rng, ctxs, names, n, seen, held_out_share)
        _dump_json(records, os.path.join(folder, filename))
        for r in records:
            queries.setdefault(r["db_id"], []).append(r["query"])
    for ctx in contexts:
        ctx.conn.close()
    _test_suites(folder, seed, all_domains, rows, queries, ts_copies)
    _dump_json(entries, os.path.join(folder, "tables.json"))
    manifest = {
        "generator": "kid.synth",
        "seed": seed,
        "sizes": dataclasses.asdict(sizes),
        "ts_copies": ts_copies,
        "train_domains": [d.db_id for d in domains.TRAIN_DOMAINS],
        "dev_domains": [d.db_id for d in domains.DEV_DOMAINS],
        "train_databases": [d.db_id for d in train_domains],
        "dev_databases": [d.db_id for d in dev_domains],
        "held_out_of_train": [list(pair) for pair in constructs.HELD_OUT],
        "held_out_share_in_dev": HELD_OUT_SHARE,
        "hardness_mix": splits.SPIDER_DEV_MIX,
    }
    _dump_json(manifest, os.path.join(folder, MANIFEST))


def _replaceable(path: str) -> bool:
    """Only an empty folder or an earlier benchmark may be replaced."""
    return not os.listdir(path) or os.path.exists(os.path.join(path, MANIFEST))


def generate(
    out: str | os.PathLike[str],
    seed: int = 0,
    sizes: Sizes | None = None,
    ts_copies: int = 3,
    databases: tuple[int, int] = DATABASES,
) -> None:
    """Writes the benchmark to `out` (replacing an earlier benchmark there).

    Args:
      out: the folder to write; it may hold an earlier benchmark, nothing else.
      seed: fixes every file, byte for byte.
      sizes: examples per split (default 6000 train, 600 dev, 600 dev_in_domain, 300
        val_in_domain).
      ts_copies: test-suite copies of each database, in database_ts/<db_id>/.
      databases: how many train and dev databases, renamed variants of the train and dev
        domains (`variants`), at least one per domain.
    """
    sizes = sizes or Sizes()
    databases = check_databases(databases, "databases")
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not (os.path.isdir(out) and _replaceable(out)):
        raise FileExistsError(f"{out}: exists and is not a benchmark written by kid.synth")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    try:
        _write_benchmark(staging, seed, sizes, ts_copies, databases)
        os.chmod(staging, 0o755)
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old.", dir=parent)
            os.rename(out, os.path.join(old, "benchmark"))
            os.rename(staging, out)
            shutil.rmtree(old)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
