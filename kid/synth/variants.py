"""Many databases from one domain: the same meaning under other names and layouts.

With one spelling per domain a model learns its schemas by heart instead of reading the
prompt, and then fails on every unseen database. A variant keeps a domain's tables,
values and questions (questions use the domain's words, never its identifiers) and draws,
per database, what Spider's schemas vary: a naming style (snake, camel or Pascal case, a
table prefix, `id` or `artist_id` keys, columns prefixed by their table), per identifier
a synonym from the words questions use or an abbreviation, the column order, distractor
columns and distractor tables (borrowed from other domains of the same split) that no
question asks about. Variant 0 of a domain keeps its plain names.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Sequence

from kid.synth import domains, vocab
from kid.synth.domains import ColumnSpec, Domain, TableSpec

CASES = ("snake", "snake", "camel", "pascal")
TABLE_PREFIXES = ("", "", "", "tbl_", "t_")
ABBREVIATIONS = {
    "amount": "amt", "average": "avg", "balance": "bal", "birth": "dob", "budget": "bdgt",
    "category": "cat", "country": "ctry", "credits": "cr", "customer": "cust",
    "department": "dept", "description": "desc", "distance": "dist", "employee": "emp",
    "identifier": "id", "length": "len", "manager": "mgr", "member": "mbr", "number": "no",
    "position": "pos", "price": "prc", "product": "prod", "publication": "pub",
    "quantity": "qty", "rating": "rtg", "restaurant": "rest", "salary": "sal",
    "specialty": "spec", "student": "stu", "year": "yr",
}  # fmt: skip
SYNONYMS = {
    "name": ("full_name", "label"), "title": ("name", "heading"), "city": ("town",),
    "country": ("nation",), "year": ("yr", "year_no"), "price": ("cost",),
}  # fmt: skip
# Not identifiers: SQL words. No identifier contains "value" either ("val" stands in):
# Spider's evaluator rewrites that word to 1.
RESERVED = frozenset(
    "all and as asc between by case count delete desc distinct drop except from group having "
    "in index insert intersect into is join key like limit not null on or order primary "
    "references select set table union update values where".split()
)


def _extra(word: str, sql_type: str, generate: domains.Generator) -> ColumnSpec:
    return ColumnSpec(word, "extra", sql_type, (word.replace("_", " "),), generate=generate)


def _code(rng: random.Random) -> str:
    return f"{rng.choice('ABCDEFGHJKLMNPRSTUVWXZ')}{rng.randint(100, 999)}"


DISTRACTOR_COLUMNS = (
    _extra("created", "int", domains.integer(2000, 2023)),
    _extra("updated", "int", domains.integer(2015, 2024)),
    _extra("code", "text", _code),
    _extra("flag", "int", domains.integer(0, 1)),
    _extra("version", "int", domains.integer(1, 9)),
    _extra("status", "text", domains.pick(("active", "closed", "pending"))),
    _extra("notes", "text", lambda rng: f"{rng.choice(vocab.ADJECTIVES).lower()} entry"),
    _extra("region", "text", domains.pick(("north", "south", "east", "west"))),
    _extra("phone", "text", lambda rng: f"555-{rng.randint(1000, 9999)}"),
)


@dataclasses.dataclass(frozen=True)
class Style:
    """How one database spells its identifiers."""

    case: str = "snake"  # "snake", "camel" or "pascal"
    table_prefix: str = ""
    table_keys: bool = False  # keys named after their table (artist_id), not `id`
    column_prefix: bool = False  # columns prefixed by their table's abbreviation
    plural_tables: bool = False
    synonym: float = 0.0  # chance an identifier uses another of its words
    abbreviate: float = 0.0  # chance a word of an identifier is abbreviated

    @classmethod
    def draw(cls, rng: random.Random) -> Style:
        return cls(
            case=rng.choice(CASES),
            table_prefix=rng.choice(TABLE_PREFIXES),
            table_keys=rng.random() < 0.5,
            column_prefix=rng.random() < 0.2,
            plural_tables=rng.random() < 0.2,
            synonym=rng.uniform(0.2, 0.6),
            abbreviate=rng.uniform(0.0, 0.3),
        )


def abbreviation(word: str) -> str:
    """A short form: the usual one where there is one, else the word without inner vowels."""
    if word in ABBREVIATIONS:
        return ABBREVIATIONS[word]
    if len(word) <= 4:
        return word
    return (word[0] + re.sub("[aeiou]", "", word[1:]))[:5]


def spell(words: Sequence[str], case: str) -> str:
    if case == "snake":
        return "_".join(words)
    head = words[0] if case == "camel" else words[0].capitalize()
    return head + "".join(w.capitalize() for w in words[1:])


class _Namer:
    """Spells identifiers in one style; unique per scope, never reserved."""

    def __init__(self, rng: random.Random, style: Style):
        self.rng, self.style = rng, style

    def words(self, phrase: str) -> list[str]:
        words = re.split(r"[\s_]+", phrase.lower().replace("value", "val"))
        return [abbreviation(w) if self.rng.random() < self.style.abbreviate else w for w in words]

    def pick_phrase(self, usual: str, others: Sequence[str]) -> str:
        others = [o for o in others if o != usual]
        if others and self.rng.random() < self.style.synonym:
            return self.rng.choice(others)
        return usual

    def unique(self, words: list[str], taken: set[str], fallback: str) -> str:
        name = spell(words, self.style.case)
        if name.lower() in RESERVED:
            name = spell([*words, fallback], self.style.case)
        while name.lower() in taken:
            name = spell([*words, str(len(taken))], self.style.case)
        taken.add(name.lower())
        return name


def _table_words(namer: _Namer, table: TableSpec) -> list[str]:
    singular, plural = table.nouns[0]
    others = [s for s, _ in table.nouns[1:]]
    phrase = namer.pick_phrase(singular, [*others, table.name])
    if namer.style.plural_tables:
        phrase = dict(table.nouns).get(phrase, plural if phrase == singular else phrase)
    return namer.words(phrase)


def _renamed(domain: Domain, rng: random.Random, style: Style, db_id: str) -> Domain:
    """`domain` under names drawn in `style`, its keys, references and bridges rewritten."""
    namer = _Namer(rng, style)
    taken_tables: set[str] = set()
    table_words, table_names, key_names = {}, {}, {}
    for t in domain.all_tables:
        words = _table_words(namer, t)
        prefix = [style.table_prefix.strip("_")] if style.table_prefix else []
        table_words[t.name] = words
        table_names[t.name] = namer.unique(prefix + words, taken_tables, "info")
        key_words = [*words, "id"] if style.table_keys else ["id"]
        key_names[t.name] = spell(key_words, style.case)

    tables = []
    column_names: dict[tuple[str, str], str] = {}
    for t in domain.all_tables:
        taken = {key_names[t.name].lower()} if not t.is_bridge else set()
        columns = []
        for c in t.columns:
            if c.role == "key":
                name = key_names[t.name]
            elif c.role == "fk":
                name = namer.unique([*table_words[c.references], "id"], taken, "ref")
            else:
                words = namer.words(
                    namer.pick_phrase(c.name, (*c.words, *SYNONYMS.get(c.name, ())))
                )
                if style.column_prefix:
                    words = [abbreviation(table_words[t.name][0])[:4], *words]
                name = namer.unique(words, taken, "col")
            column_names[t.name, c.name] = name
            columns.append(
                dataclasses.replace(
                    c,
                    name=name,
                    references=table_names.get(c.references, ""),
                    referenced_key=key_names.get(c.references, c.referenced_key),
                )
            )
        primary = tuple(column_names[t.name, k] for k in t.primary_key)
        tables.append(
            dataclasses.replace(t, name=table_names[t.name], columns=tuple(columns),
                                primary_key=primary)
        )  # fmt: skip
    bridges = tuple(
        dataclasses.replace(
            b,
            table=table_names[b.table],
            a=column_names[b.table, b.a],
            b=column_names[b.table, b.b],
        )
        for b in domain.bridges
    )
    n = len(domain.tables)
    return Domain(db_id, tuple(tables[:n]), bridges, tuple(tables[n:]))


def _shuffled_columns(rng: random.Random, table: TableSpec, extras: int) -> TableSpec:
    """Non-key columns in a random order, with `extras` distractor columns among them."""
    keys = [c for c in table.columns if c.role == "key"]
    rest = [c for c in table.columns if c.role != "key"]
    used = {c.name for c in table.columns}
    pool = [c for c in DISTRACTOR_COLUMNS if c.name not in used]
    rest += rng.sample(pool, min(extras, len(pool)))
    rng.shuffle(rest)
    return dataclasses.replace(table, columns=(*keys, *rest))


def _distractor_table(table: TableSpec) -> TableSpec:
    """A borrowed table as a distractor: its key and attributes, none of them asked about."""
    columns = tuple(
        c if c.role == "key" else dataclasses.replace(c, role="extra")
        for c in table.columns
        if c.role != "fk"
    )
    return dataclasses.replace(table, columns=columns)


def variant(domain: Domain, index: int, others: Sequence[Domain], rng: random.Random) -> Domain:
    """Database `index` of a domain, named `<domain>_<index + 1>`.

    others: domains of the same split, which lend distractor tables (a dev database never
    shows a train domain's table). Variant 0 keeps the domain's own names and layout.
    """
    db_id = f"{domain.db_id}_{index + 1}"
    if index == 0:
        return dataclasses.replace(domain, db_id=db_id)
    style = Style.draw(rng)
    tables = tuple(_shuffled_columns(rng, t, rng.choice((0, 0, 0, 1))) for t in domain.tables)
    names = {t.name for t in domain.tables}
    lenders = list({
        t.name: t for d in others if d.db_id != domain.db_id for t in d.tables
        if not t.is_bridge and t.name not in names
    }.values())  # fmt: skip
    borrowed = rng.sample(lenders, min(len(lenders), rng.choice((0, 0, 1))))
    distractors = tuple(_distractor_table(t) for t in borrowed)
    shaped = dataclasses.replace(domain, tables=tables, distractors=distractors)
    return _renamed(shaped, rng, style, db_id)


def databases(
    domain_list: Sequence[Domain], count: int, rng_for: Callable[[str], random.Random]
) -> list[Domain]:
    """`count` databases over the domains, round-robin: every domain has one before any
    has two (`build.check_databases` asks for at least one each). `rng_for(db_id)` gives
    each database its own stream."""
    out = []
    for j in range(count):
        domain, index = domain_list[j % len(domain_list)], j // len(domain_list)
        out.append(variant(domain, index, domain_list, rng_for(f"{domain.db_id}_{index + 1}")))
    return out
