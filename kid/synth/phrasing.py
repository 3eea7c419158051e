"""English for the meanings in `semantics`: several phrasings per construct, with synonyms.

Every function draws its wording from the `rng` it is given, so a question is one of
many paraphrases of its SQL. Entity phrases are always plural ("singers from France
older than 30"), which keeps agreement simple: a superlative is phrased as "the singer
with the highest age among singers from France".
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from kid.synth.domains import ColumnSpec, TableSpec
from kid.synth.query import literal
from kid.synth.semantics import Cond, Entities, Filter, ParentWhere, Related, Where

_USUAL = 0.6  # chance of the usual word for a table or column over a synonym
_CUSTOM = 0.5  # chance of a column's own phrase ("older than") over a generic one

EQUAL = ("whose {col} is {v}", "with {col} {v}", "that have {col} {v}", "where the {col} is {v}")
MORE = ("whose {col} is greater than {v}", "with {col} above {v}", "with a {col} over {v}",
        "whose {col} is more than {v}", "with {col} higher than {v}", "whose {col} exceeds {v}")  # fmt: skip
LESS = ("whose {col} is less than {v}", "with {col} below {v}", "with a {col} under {v}",
        "whose {col} is lower than {v}", "with {col} smaller than {v}")  # fmt: skip
BETWEEN = ("whose {col} is between {a} and {b}", "with {col} between {a} and {b}",
           "with a {col} from {a} to {b}", "whose {col} lies between {a} and {b}")  # fmt: skip
CONTAINS = ("whose {col} contains '{w}'", "with '{w}' in their {col}",
            "whose {col} includes the word '{w}'")  # fmt: skip
STARTS = ("whose {col} starts with '{w}'", "whose {col} begins with '{w}'",
          "whose {col} starts with the letter '{w}'")  # fmt: skip
ABOVE_AVERAGE = ("whose {col} is above average", "with a {col} higher than the average",
                 "with an above-average {col}", "whose {col} exceeds the average {col}")  # fmt: skip
BELOW_AVERAGE = ("whose {col} is below average", "with a {col} lower than the average",
                 "with a below-average {col}", "whose {col} is under the average {col}")  # fmt: skip

AGG_WORDS = {
    "avg": ("average", "mean"),
    "sum": ("total", "combined"),
    "min": ("minimum", "lowest", "smallest"),
    "max": ("maximum", "highest", "largest"),
}
YEAR_AGG_WORDS = {"min": ("earliest", "minimum"), "max": ("latest", "maximum")}
HIGHEST = ("highest", "largest", "greatest")
LOWEST = ("lowest", "smallest")

ORDER_DESC = (", sorted by {col} in descending order", ", ordered by {col} from highest to lowest",
              " in descending order of {col}", ", from the highest {col} to the lowest")  # fmt: skip
ORDER_ASC = (", sorted by {col}", ", ordered by {col} in ascending order",
             " in ascending order of {col}", ", from the lowest {col} to the highest")  # fmt: skip
ORDER_ALPHA = (", in alphabetical order of {col}", ", sorted alphabetically by {col}",
               ", ordered by {col}")  # fmt: skip
ORDER_ALPHA_DESC = (", in reverse alphabetical order of {col}",
                    ", sorted by {col} in descending order")  # fmt: skip

IMPERATIVES = ("List", "Show", "Give", "Find", "Return", "Display", "Tell me", "Get")


def choose(rng: random.Random, options: Sequence[str]) -> str:
    return options[rng.randrange(len(options))]


def _usual_or_other(rng: random.Random, options: Sequence[Any]) -> Any:
    if len(options) == 1 or rng.random() < _USUAL:
        return options[0]
    return options[1 + rng.randrange(len(options) - 1)]


def noun(rng: random.Random, table: TableSpec, plural: bool = True) -> str:
    singular, many = _usual_or_other(rng, table.nouns)
    return many if plural else singular


def column_word(rng: random.Random, column: ColumnSpec) -> str:
    return _usual_or_other(rng, column.words)


def column_plural(column: ColumnSpec) -> str:
    return column.plural or column.words[0]


def owned_column(rng: random.Random, table: TableSpec, column: ColumnSpec, base: TableSpec) -> str:
    """A column's words; a parent's column is prefixed with the parent ("artist name")."""
    word = column_word(rng, column)
    return word if table.name == base.name else f"{noun(rng, table, False)} {word}"


def join_words(words: Sequence[str]) -> str:
    if len(words) <= 2:
        return " and ".join(words)
    return ", ".join(words[:-1]) + f", and {words[-1]}"


def value_text(rng: random.Random, column: ColumnSpec, value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"' if column.role == "name" and rng.random() < 0.3 else value
    return literal(value)


def _template(rng: random.Random, custom: Sequence[str], generic: Sequence[str]) -> str:
    if custom and rng.random() < _CUSTOM:
        return choose(rng, custom)
    return choose(rng, generic)


def cond_text(rng: random.Random, cond: Cond) -> str:
    c = cond.column
    col = column_word(rng, c)
    if cond.op == "=":
        v = value_text(rng, c, cond.values[0])
        return _template(rng, c.equal, EQUAL).format(col=col, v=v)
    if cond.op in ("<", ">"):
        v = literal(cond.values[0])
        custom, generic = (c.more, MORE) if cond.op == ">" else (c.less, LESS)
        return _template(rng, custom, generic).format(col=col, v=v)
    if cond.op == "BETWEEN":
        a, b = (literal(v) for v in cond.values)
        return _template(rng, c.between, BETWEEN).format(col=col, a=a, b=b)
    pattern = cond.values[0]
    if pattern.startswith("%"):
        return choose(rng, CONTAINS).format(col=col, w=pattern.strip("%"))
    return choose(rng, STARTS).format(col=col, w=pattern.rstrip("%"))


def filter_text(rng: random.Random, f: Filter) -> str:
    if isinstance(f, Where):
        return cond_text(rng, f.cond)
    if isinstance(f, ParentWhere):
        of = choose(rng, f.fk.of)
        parent = f.cond.table
        if f.cond.op == "=" and f.cond.column is parent.display and rng.random() < 0.5:
            v = value_text(rng, f.cond.column, f.cond.values[0])
            return f"{of} the {noun(rng, parent, False)} {v}"
        return f"{of} {noun(rng, parent)} {cond_text(rng, f.cond)}"
    if isinstance(f, Related):
        verb = choose(rng, f.relation.has_no if f.negated else f.relation.has)
        text = f"{verb} {noun(rng, f.relation.target)}"
        return f"{text} {cond_text(rng, f.cond)}" if f.cond else text
    col = column_word(rng, f.column)
    return choose(rng, ABOVE_AVERAGE if f.op == ">" else BELOW_AVERAGE).format(col=col)


def entities_text(rng: random.Random, ents: Entities, adjective: str = "") -> str:
    """ "singers from France or older than 30" (always plural)."""
    head = noun(rng, ents.table)
    if adjective:
        head = f"{adjective} {head}"
    if not ents.filters:
        return head
    parts = [filter_text(rng, f) for f in ents.filters]
    return f"{head} {f' {ents.conj.lower()} '.join(parts)}"


def agg_word(rng: random.Random, agg: str, column: ColumnSpec, plain: bool = False) -> str:
    """ "average", "mean", ...; `plain` keeps the first word, to follow "highest" well."""
    words = (YEAR_AGG_WORDS if column.role == "year" else AGG_WORDS)[agg]
    return words[0] if plain else choose(rng, words)


def order_text(rng: random.Random, column_text: str, column: ColumnSpec, descending: bool) -> str:
    if column.type == "text":
        options = ORDER_ALPHA_DESC if descending else ORDER_ALPHA
    else:
        options = ORDER_DESC if descending else ORDER_ASC
    return choose(rng, options).format(col=column_text)


def extreme_word(rng: random.Random, descending: bool) -> str:
    return choose(rng, HIGHEST if descending else LOWEST)


_QUESTION_WORDS = ("what", "which", "how", "who", "can", "could")
_VOWEL_ARTICLE = re.compile(r"\b([Aa]) (?=[aeioAEIO])")  # not "u": "a unit"


def sentence(text: str) -> str:
    """Capitalises, fixes "a" before a vowel, and ends with ? or . as the words ask."""
    text = _VOWEL_ARTICLE.sub(r"\1n ", text.strip())
    text = text[0].upper() + text[1:]
    if text[-1] in ".?":
        return text
    question = text.split()[0].lower() in _QUESTION_WORDS
    return text + ("?" if question else ".")
