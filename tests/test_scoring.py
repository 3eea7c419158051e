"""Verdicts against the official evaluators, gold-vs-gold on Spider dev, TS, BIRD EX, and
the `python -m kid.evaluate` CLI (CONTRACT 3)."""

import json
import shutil
import sqlite3

import pytest

from kid import evaluate
from kid.data import schema as schema_lib
from kid.sql import report, sql_files
from kid.sql.executor import Result
from kid.sql.scoring import GoldCache, Scorer, Verdict

FIELDS = {"idx", "db_id", "hardness", "exec", "match", "ts", "error"}


@pytest.fixture(scope="module")
def official(spider_dir):
    folder = spider_dir / "official_verdicts"
    records = [json.loads(line) for line in open(folder / "verdicts.jsonl")]
    golds, preds = sql_files.read_pair(folder / "gold.sql", folder / "pred.sql")
    assert [g for g, _ in golds] == [r["gold"] for r in records]
    assert preds == [r["pred"] for r in records]
    return golds, preds, records


def _disagreements(verdicts, records, field, official_field):
    return [
        (r["idx"], getattr(v, field), r[official_field])
        for v, r in zip(verdicts, records, strict=True)
        if getattr(v, field) != r[official_field]
    ]


@pytest.mark.parametrize("keep_distinct", [False, True])
def test_agrees_with_official_verdicts(official, spider_tables, spider_dir, keep_distinct):
    golds, preds, records = official
    with Scorer(spider_dir / "database", schemas=spider_tables, keep_distinct=keep_distinct) as s:
        verdicts = s.score(golds, preds)
    exec_field = "official_exec_keep_distinct" if keep_distinct else "official_exec"
    assert _disagreements(verdicts, records, "exec", exec_field) == []
    assert _disagreements(verdicts, records, "hardness", "hardness") == []
    assert len(_disagreements(verdicts, records, "match", "official_match")) <= 0.02 * len(records)
    # Failing predictions carry their typed error; wrong results carry none.
    for v, r in zip(verdicts, records, strict=True):
        if r["category"] == "syntax_error":
            assert v.error == "syntax", (v, r["pred"])
        if v.exec == 1:
            assert v.error is None


def test_value_rewrite_is_the_only_departure_when_off(official, spider_dir):
    golds, preds, records = official
    with Scorer(spider_dir / "database", value_rewrite=False, etype="exec") as s:
        verdicts = s.score(golds, preds)
    changed = _disagreements(verdicts, records, "exec", "official_exec")
    assert changed == [(36, 1, 0), (178, 1, 0), (180, 1, 0)]  # `attribute_value` & co.
    assert all(v.match is None for v in verdicts)  # no schemas given: no exact match


def test_cli_gold_vs_gold_on_dev(spider_dir, tmp_path, capsys):
    gold = spider_dir / "dev_gold.sql"
    pred = tmp_path / "pred.sql"
    pred.write_text("".join(line.split("\t")[0] + "\n" for line in open(gold)))
    out = tmp_path / "per_example.jsonl"
    argv = ["--gold", str(gold), "--pred", str(pred), "--db-dir", str(spider_dir / "database")]
    argv += ["--table", str(spider_dir / "tables.json"), "--etype", "all"]
    assert evaluate.main(argv + ["--per-example", str(out), "--workers", "2"]) == 0
    rows = [json.loads(line) for line in open(out)]
    assert len(rows) == 1034 and all(set(r) == FIELDS for r in rows)
    assert [r["idx"] for r in rows] == list(range(1034))
    missing = [r for r in rows if r["exec"] is None]
    assert len(missing) == 62
    assert {(r["db_id"], r["error"]) for r in missing} == {("wta_1", "missing_database")}
    assert all(r["exec"] == 1 and r["error"] is None for r in rows if r["db_id"] != "wta_1")
    assert all(r["match"] == 1 and r["ts"] is None for r in rows)
    hardness = [r["hardness"] for r in rows]
    assert [hardness.count(h) for h in ("easy", "medium", "hard", "extra")] == [248, 446, 174, 166]
    printed = capsys.readouterr().out
    assert "execution" in printed and "exact match" in printed
    assert "62 examples excluded from execution (wta_1 62)" in printed


def _copy_with_change(source, target, sql):
    shutil.copy(source, target)
    target.chmod(0o644)
    conn = sqlite3.connect(target)
    conn.execute(sql)
    conn.commit()
    conn.close()


def test_test_suite_accuracy(spider_dir, tmp_path):
    source = spider_dir / "database/concert_singer/concert_singer.sqlite"
    suite = tmp_path / "ts" / "concert_singer"
    suite.mkdir(parents=True)
    shutil.copy(source, suite / "a.sqlite")
    _copy_with_change(source, suite / "b.sqlite", "UPDATE singer SET age = 29.5 WHERE age = 29")
    ages = sqlite3.connect(source).execute("SELECT age FROM singer").fetchall()
    assert (29,) in ages  # so `age > 29` and `age >= 30` differ only on b.sqlite
    golds = [("SELECT name FROM singer WHERE age > 29", "concert_singer")] * 2
    golds.append(("SELECT name FROM singer", "wta_1"))  # no database, no test suite
    preds = ["SELECT name FROM singer WHERE age >= 30", "SELECT name FROM singer WHERE age > 29"]
    preds.append("SELECT name FROM singer")
    with Scorer(spider_dir / "database", ts_dir=tmp_path / "ts") as s:
        verdicts = s.score(golds, preds)
    assert [(v.exec, v.ts, v.error) for v in verdicts] == [
        (1, 0, None),
        (1, 1, None),
        (None, None, "missing_database"),
    ]


def test_test_suite_includes_the_main_database(spider_dir, tmp_path):
    """Right on every copy but wrong on the original: TS 0, as the official test suites
    (which hold the original) say, so TS <= EX."""
    source = spider_dir / "database/concert_singer/concert_singer.sqlite"
    suite = tmp_path / "ts" / "concert_singer"
    suite.mkdir(parents=True)
    _copy_with_change(source, suite / "c.sqlite", "DELETE FROM singer WHERE age = 29")
    golds = [("SELECT name FROM singer WHERE age > 29", "concert_singer")]
    with Scorer(spider_dir / "database", ts_dir=tmp_path / "ts") as s:
        (verdict,) = s.score(golds, ["SELECT name FROM singer WHERE age >= 29"])
    assert (verdict.exec, verdict.ts) == (0, 0)


def test_bird_metric_compares_sets(spider_dir):
    golds = [("SELECT name FROM singer ORDER BY age", "concert_singer")] * 3
    preds = [
        "SELECT name FROM singer UNION ALL SELECT name FROM singer",  # duplicates, any order
        "SELECT DISTINCT name, 1 FROM singer",  # an extra column
        "SELECT name FROM singer ORDER BY age DESC",
    ]
    with Scorer(spider_dir / "database", metric="bird", etype="exec") as s:
        bird = [v.exec for v in s.score(golds, preds)]
    with Scorer(spider_dir / "database", etype="exec") as s:
        spider = [v.exec for v in s.score(golds, preds)]
    assert bird == [1, 0, 1]
    assert spider == [0, 0, 0]


def test_failing_gold_counts_as_wrong_and_gold_results_are_cached(spider_dir):
    golds = [("SELECT nope FROM singer", "concert_singer"), ("SELECT 1", "concert_singer")]
    with Scorer(spider_dir / "database", etype="exec", timeout=5.0) as s:
        first = s.score(golds, ["SELECT 1", "SELECT 1"])
        assert [(v.exec, v.error) for v in first] == [(0, "gold_runtime"), (1, None)]
        assert len(s.cache) == 2
        assert s.score(golds, ["SELECT 1", "SELECT 2"])[1].exec == 0
        assert len(s.cache) == 2


def test_background_scoring_gives_the_same_verdicts(official, spider_tables, spider_dir):
    golds, preds, _ = official
    golds, preds = golds[:120], preds[:120]
    with Scorer(spider_dir / "database", schemas=spider_tables) as s:
        futures = [s.submit(golds, preds), s.submit(golds[::-1], preds[::-1])]
        direct = s.score(golds, preds)
        assert futures[0].result() == direct
        reversed_ = futures[1].result()
    assert [(v.exec, v.match) for v in reversed_[::-1]] == [(v.exec, v.match) for v in direct]


def test_summary_excludes_missing_databases():
    verdicts = [
        Verdict(0, "a", "easy", 1, 1, None, None),
        Verdict(1, "a", "easy", 0, 1, None, "syntax"),
        Verdict(2, "b", "hard", None, 0, None, "missing_database"),
    ]
    summary = report.summarize(verdicts)
    assert summary["levels"]["easy"]["exec"] == 0.5
    assert summary["levels"]["all"]["exec"] == 0.5 and summary["levels"]["all"]["exec_n"] == 2
    assert summary["levels"]["all"]["match"] == pytest.approx(2 / 3)
    assert summary["levels"]["medium"]["exec"] is None
    assert summary["missing_database"] == {"b": 1} and summary["errors"] == {"syntax": 1}
    text = report.format_summary(summary)
    assert "test-suite" not in text and "1 examples excluded" in text


def test_cli_rejects_mismatched_files(spider_dir, tmp_path, capsys):
    gold = tmp_path / "gold.sql"
    gold.write_text("SELECT 1\tconcert_singer\nSELECT 2\tconcert_singer\n")
    pred = tmp_path / "pred.sql"
    pred.write_text("SELECT 1\n")
    common = ["--db-dir", str(spider_dir / "database"), "--table", str(spider_dir / "tables.json")]
    assert evaluate.main(["--gold", str(gold), "--pred", str(pred), *common]) == 2
    assert "has 1 predictions but" in capsys.readouterr().err
    pred.write_text("SELECT 1\n\n")  # an empty line is an empty prediction
    assert evaluate.main(["--gold", str(gold), "--pred", str(pred), *common]) == 0
    gold.write_text("SELECT 1 concert_singer\n")
    assert evaluate.main(["--gold", str(gold), "--pred", str(pred), *common]) == 2
    assert f"{gold}:1: expected 'SQL<TAB>db_id'" in capsys.readouterr().err


def test_read_predictions_keeps_empty_lines(tmp_path):
    path = tmp_path / "pred.sql"
    path.write_text("SELECT 1\tdb\n\n  SELECT 2  \n")
    assert sql_files.read_predictions(path) == ["SELECT 1", "", "SELECT 2"]


def test_schemas_come_from_sqlite_when_not_in_tables(spider_dir, spider_tables):
    partial = {k: v for k, v in spider_tables.items() if k != "concert_singer"}
    golds = [("SELECT name FROM singer", "concert_singer")]
    with Scorer(spider_dir / "database", schemas=partial, etype="match") as s:
        assert s.score(golds, ["SELECT name FROM singer"])[0].match == 1
        with pytest.raises(schema_lib.SchemaError, match="no_such_db"):
            s.score([("SELECT 1", "no_such_db")], ["SELECT 1"])


def test_gold_cache_is_bounded_and_skips_timeouts():
    cache = GoldCache(max_bytes=100)
    cache.put(("a",), Result([(1,)], nbytes=60))
    cache.put(("b",), Result([(2,)], nbytes=60))  # evicts a
    cache.put(("c",), Result(None, "timeout", "slow"))
    assert cache.get(("a",)) is None and cache.get(("b",)).rows == [(2,)]
    assert cache.get(("c",)) is None and len(cache) == 1
