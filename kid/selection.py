"""Execution-guided choice among candidate SQL (the beams, or samples, of one question).

Text-to-SQL papers report these decoding choices (CodeS, OmniSQL): of the candidates keep
the first that executes, or the one whose execution result most candidates share
(self-consistency). Candidates run in the sandboxed executor (read-only, row cap, timeout);
a result is compared as the set of its rows.

    keys = execution_keys(executor, db_path, candidates)   # None: failed or empty SQL
    best = candidates[choose(keys, "majority")]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from kid.sql import executor as executor_lib

RULES = ("first", "executable", "majority")
Key = Hashable | None


def result_key(result: executor_lib.Result) -> Key:
    """What identifies an execution result (its columns and the set of its rows); None for a
    query that failed."""
    if result.error is not None or result.form is None:
        return None
    form = result.form
    rows = form.bird_rows if form.bird_rows is not None else form.set_quick
    return (form.ncols, rows)


def choose(keys: Sequence[Key], rule: str) -> int:
    """Index of the chosen candidate, given each candidate's result key (best-ranked first).

    "first": candidate 0. "executable": the first whose key is not None. "majority": the
    first candidate of the key most candidates share (ties: the key seen first). With no
    executable candidate every rule keeps candidate 0.
    """
    if rule not in RULES:
        raise ValueError(f"selection rule {rule!r} is not one of {RULES}")
    if not keys:
        raise ValueError("no candidates to choose from")
    executable = [i for i, k in enumerate(keys) if k is not None]
    if rule == "first" or not executable:
        return 0
    if rule == "executable":
        return executable[0]
    votes: dict[Hashable, list[int]] = {}
    for i in executable:
        votes.setdefault(keys[i], []).append(i)
    return max(votes.values(), key=lambda members: (len(members), -members[0]))[0]


def execution_keys(
    executor: executor_lib.Executor, jobs: Sequence[tuple[str | None, str]]
) -> list[Key]:
    """Result keys of (database path, SQL) jobs; a missing database or empty SQL is None."""
    runnable = [i for i, (path, sql) in enumerate(jobs) if path and sql.strip()]
    results = executor.run([jobs[i] for i in runnable], forms=True)
    keys: list[Key] = [None] * len(jobs)
    for i, result in zip(runnable, results, strict=True):
        keys[i] = result_key(result)
    return keys


def executes(candidates: Sequence[Sequence[str]], rule: str) -> bool:
    """Whether choosing by ``rule`` runs the candidates (not for "first" or one each)."""
    return rule != "first" and any(len(c) > 1 for c in candidates)


def select(
    executor: executor_lib.Executor | None,
    db_paths: Sequence[str | None],
    candidates: Sequence[Sequence[str]],
    rule: str,
) -> list[str]:
    """One SQL per example: ``candidates[i]`` chosen by ``rule`` on database ``db_paths[i]``
    (``executor`` may be None for "first")."""
    if rule not in RULES:
        raise ValueError(f"selection rule {rule!r} is not one of {RULES}")
    if not executes(candidates, rule):
        return [c[0] for c in candidates]
    if executor is None:
        raise ValueError(f"selection rule {rule!r} executes the candidates: it needs an executor")
    jobs = [(path, sql) for path, c in zip(db_paths, candidates, strict=True) for sql in c]
    keys = execution_keys(executor, jobs)
    chosen, start = [], 0
    for c in candidates:
        chosen.append(c[choose(keys[start : start + len(c)], rule)])
        start += len(c)
    return chosen
