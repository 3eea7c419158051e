"""Renamed variants of the synthetic domains: many schemas, one meaning each."""

import dataclasses
import random
import re

import pytest

from kid.data import schema as schema_lib
from kid.synth import build, database, domains, grammar, variants
from kid.synth.query import to_sql

RESERVED_OR_VALUE = re.compile(rf"^({'|'.join(variants.RESERVED)})$|value", re.IGNORECASE)


def _train_databases(n: int = 30) -> list[domains.Domain]:
    return variants.databases(domains.TRAIN_DOMAINS, n, lambda db: random.Random(db))


def test_variant_zero_keeps_the_domain_and_the_others_rename_it():
    dbs = _train_databases()
    plain = {d.db_id: d for d in dbs if d.db_id.endswith("_1")}
    assert len(plain) == len(domains.TRAIN_DOMAINS)
    for domain in domains.TRAIN_DOMAINS:
        assert plain[f"{domain.db_id}_1"].tables == domain.tables
    spellings = [frozenset(t.name for t in d.all_tables) for d in dbs]
    assert len(set(spellings)) >= 0.8 * len(dbs)


def test_names_are_unique_legal_and_keys_resolve():
    for d in _train_databases() + variants.databases(domains.DEV_DOMAINS, 12, random.Random):
        tables = {t.name.lower(): t for t in d.all_tables}
        assert len(tables) == len(d.all_tables), d.db_id
        for t in d.all_tables:
            names = [c.name.lower() for c in t.columns]
            assert len(set(names)) == len(names), (d.db_id, t.name)
            assert not [n for n in [t.name, *names] if RESERVED_OR_VALUE.search(n)], d.db_id
            assert set(t.primary_key) <= set(c.name for c in t.columns)
            for fk in t.foreign_keys:
                parent = tables[fk.references.lower()]
                assert parent.primary_key == (fk.referenced_key,), (d.db_id, fk.name)
        for b in d.bridges:
            bridge = d.table(b.table)
            assert {bridge.column(b.a).role, bridge.column(b.b).role} == {"fk"}


def _plain_names(renamed: domains.Domain, plain: domains.Domain) -> domains.Domain:
    """`renamed` with the plain domain's names back (matched by meaning), same layout."""
    tables = []
    for p, r in zip(plain.tables, renamed.tables, strict=True):
        assert p.nouns == r.nouns
        back = {
            rc.name: next(pc for pc in p.columns if (pc.words, pc.role) == (rc.words, rc.role)).name
            for rc in r.columns
            if rc.role != "extra"
        }
        columns = tuple(
            dataclasses.replace(
                c,
                name=back.get(c.name, c.name),
                references=plain.tables[renamed.tables.index(renamed.table(c.references))].name
                if c.references
                else "",
                referenced_key="id",
            )
            for c in r.columns
        )
        primary = tuple(back[k] for k in r.primary_key)
        tables.append(dataclasses.replace(r, name=p.name, columns=columns, primary_key=primary))
    return dataclasses.replace(renamed, tables=tuple(tables), bridges=plain.bridges)


@pytest.mark.parametrize("index", [11, 12, 15, 23])
def test_a_variant_asks_what_its_domain_asks_under_other_names(index):
    """Sampled with the same rng, a variant and the plain-named copy of its layout ask the
    same question, and their gold SQL returns the same rows: renaming changed names only."""
    renamed = _train_databases()[index]
    plain = next(d for d in domains.TRAIN_DOMAINS if renamed.db_id.startswith(d.db_id + "_"))
    twin = _plain_names(renamed, plain)
    rows = database.populate(renamed, random.Random(0))
    twin_rows = {
        t.name: rows[r.name] for t, r in zip(twin.all_tables, renamed.all_tables, strict=True)
    }
    conn, twin_conn = database.connect(renamed, rows), database.connect(twin, twin_rows)
    ctx, twin_ctx = grammar.Context(renamed, conn), grammar.Context(twin, twin_conn)
    compared = 0
    for seed in range(80):
        level = ("easy", "medium", "hard", "extra")[seed % 4]
        a = grammar.sample(random.Random(seed), ctx, level)
        b = grammar.sample(random.Random(seed), twin_ctx, level)
        assert (a is None) == (b is None)
        if a is None:
            continue
        assert a.question == b.question
        sql, plain_sql = to_sql(a.select), to_sql(b.select)
        assert sql != plain_sql
        assert conn.execute(sql).fetchall() == twin_conn.execute(plain_sql).fetchall()
        compared += 1
    assert compared >= 40


def test_distractors_are_never_asked_and_dev_borrows_only_dev_tables():
    dev = variants.databases(domains.DEV_DOMAINS, 40, lambda db: random.Random(db))
    dev_nouns = {n for d in domains.DEV_DOMAINS for t in d.tables for n in t.nouns}
    borrowed = [t for d in dev for t in d.distractors]
    assert borrowed and all(set(t.nouns) <= dev_nouns for t in borrowed)
    assert all(c.role in ("key", "extra") for t in borrowed for c in t.columns)
    extras = [
        c for d in _train_databases() for t in d.tables for c in t.columns if c.role == "extra"
    ]
    assert extras  # distractor columns exist, and the grammar only asks by role


def test_tables_entry_spells_readable_names():
    d = _train_databases()[10]
    entry = database.tables_entry(d)
    for (_, original), (_, readable) in zip(
        entry["column_names_original"][1:], entry["column_names"][1:], strict=True
    ):
        assert readable == schema_lib.natural_name(original)
        assert readable == readable.lower() and "_" not in readable


def test_database_counts_parse_and_refuse_too_few(tmp_path):
    assert build.parse_databases("100,20") == (100, 20)
    for bad, match in (("5,4", "5 train databases for 10 domains"), ("10", "TRAIN,DEV")):
        with pytest.raises(ValueError, match=match):
            build.parse_databases(bad)
    with pytest.raises(ValueError, match="databases: 3 dev databases for 4 domains"):
        build.generate(tmp_path / "bench", databases=(10, 3))
    assert not (tmp_path / "bench").exists()
