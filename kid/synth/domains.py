"""The databases of the synthetic benchmark: schemas, value generators, and their words.

No column name contains "value": Spider's evaluator replaces that word by 1 in every
prediction before running it. Each domain is a small relational schema (2-5 tables, primary and foreign keys) with,
per column, a value generator and the words a question may use for it (synonyms, and
phrases such as "older than {v}" for comparisons). Column names are short so the
T5-style prompt of a whole database stays small. Train and dev use disjoint domains,
as Spider does, so dev measures generalisation to unseen schemas.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

from kid.synth import vocab

Generator = Callable[[random.Random], Any]
ROLES = ("key", "fk", "name", "cat", "num", "year", "extra")


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    """One column. `role` says what questions may do with it.

    key: primary key (joins only); fk: foreign key (joins only); name: identifying text
    (select, =, LIKE); cat: categorical text (select, =, GROUP BY, set operations);
    num: quantity (select, <, >, BETWEEN, aggregates, ORDER BY); year: like num, but
    only MIN / MAX aggregate; extra: a distractor no question asks about.
    """

    name: str
    role: str
    type: str  # "int", "real", "text"
    words: tuple[str, ...] = ()  # phrasings of the column's name, first is the usual one
    plural: str = ""  # plural of words[0], for name / cat columns ("cities")
    generate: Generator | None = None
    unique: bool = False
    references: str = ""  # fk: the referenced table
    referenced_key: str = "id"  # fk: the referenced table's key column
    sum_ok: bool = False  # an additive quantity, for which SUM makes sense
    equal: tuple[str, ...] = ()  # extra phrases for "= {v}" ("from {v}")
    more: tuple[str, ...] = ()  # extra phrases for "> {v}" ("older than {v}")
    less: tuple[str, ...] = ()
    between: tuple[str, ...] = ()  # with {a} and {b}
    most: str = ""  # superlative adjective for the largest value ("oldest")
    least: str = ""
    # fk only: how children relate to their parent, and parents to their children.
    of: tuple[str, ...] = ("of", "belonging to")
    has: tuple[str, ...] = ("with", "that have")
    has_no: tuple[str, ...] = ("without", "that have no")

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"column {self.name}: unknown role {self.role!r}")

    @property
    def sql_type(self) -> str:
        return {"int": "INTEGER", "real": "REAL", "text": "TEXT"}[self.type]


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    nouns: tuple[tuple[str, str], ...]  # (singular, plural) phrasings, first is the usual one
    columns: tuple[ColumnSpec, ...]
    rows: tuple[int, int]  # row count range
    primary_key: tuple[str, ...] = ("id",)

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name!r}")

    def with_role(self, *roles: str) -> list[ColumnSpec]:
        return [c for c in self.columns if c.role in roles]

    @property
    def display(self) -> ColumnSpec | None:
        """The column that names a row in answers (a person's name, a title), if any."""
        names = self.with_role("name")
        return names[0] if names else None

    @property
    def foreign_keys(self) -> list[ColumnSpec]:
        return self.with_role("fk")

    @property
    def is_bridge(self) -> bool:
        """A many-to-many table, keyed by its pair of foreign keys."""
        return len(self.primary_key) > 1


@dataclasses.dataclass(frozen=True)
class Bridge:
    """A many-to-many table linking `a` and `b`, with how each side relates to the other."""

    table: str
    a: str  # fk column to table A
    b: str  # fk column to table B
    a_has: tuple[str, ...]  # "students {that take} courses ..."
    a_has_no: tuple[str, ...]
    b_has: tuple[str, ...]  # "courses {taken by} students ..."
    b_has_no: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Domain:
    """A database: the tables questions ask about, and distractor tables they never do."""

    db_id: str
    tables: tuple[TableSpec, ...]
    bridges: tuple[Bridge, ...] = ()
    distractors: tuple[TableSpec, ...] = ()

    @property
    def all_tables(self) -> tuple[TableSpec, ...]:
        """Every table of the database file and its schema, parents before children."""
        return self.tables + self.distractors

    def table(self, name: str) -> TableSpec:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"database {self.db_id} has no table {name!r}")


# --- value generators -----------------------------------------------------------------


def pick(options: tuple) -> Generator:
    return lambda rng: rng.choice(options)


def integer(lo: int, hi: int) -> Generator:
    return lambda rng: rng.randint(lo, hi)


def decimal(lo: float, hi: float, digits: int = 2) -> Generator:
    return lambda rng: round(rng.uniform(lo, hi), digits)


def person(rng: random.Random) -> str:
    return f"{rng.choice(vocab.FIRST_NAMES)} {rng.choice(vocab.LAST_NAMES)}"


def title(rng: random.Random) -> str:
    return f"{rng.choice(vocab.ADJECTIVES)} {rng.choice(vocab.NOUNS)}"


def place(rng: random.Random) -> str:
    return f"{rng.choice(vocab.CITIES)} {rng.choice(vocab.PLACE_SUFFIXES)}"


def suffixed(names: tuple[str, ...], suffixes: tuple[str, ...]) -> Generator:
    return lambda rng: f"{rng.choice(names)} {rng.choice(suffixes)}"


# --- column constructors ----------------------------------------------------------------


def key() -> ColumnSpec:
    return ColumnSpec("id", "key", "int", ("id",))


def fk(name: str, parent: str, **phrases: tuple[str, ...]) -> ColumnSpec:
    return ColumnSpec(name, "fk", "int", (name.replace("_", " "),), references=parent, **phrases)


def name(
    gen: Generator, col: str = "name", words=("name",), plural="names", unique=True
) -> ColumnSpec:
    return ColumnSpec(col, "name", "text", words, plural, gen, unique=unique)


def cat(col: str, options: tuple, words: tuple, plural: str, **phrases) -> ColumnSpec:
    return ColumnSpec(col, "cat", "text", words, plural, pick(options), **phrases)


def num(
    col: str, lo: float, hi: float, words: tuple, digits: int | None = None, **kw
) -> ColumnSpec:
    if digits is None:
        return ColumnSpec(col, "num", "int", words, generate=integer(int(lo), int(hi)), **kw)
    return ColumnSpec(col, "num", "real", words, generate=decimal(lo, hi, digits), **kw)


def year(col: str, lo: int, hi: int, words: tuple, **kw) -> ColumnSpec:
    return ColumnSpec(col, "year", "int", words, generate=integer(lo, hi), **kw)


AGE = dict(
    more=("older than {v}", "over {v} years old"),
    less=("younger than {v}", "under {v} years old"),
    between=("aged between {a} and {b}",),
    most="oldest",
    least="youngest",
)
PRICE = dict(more=("costing more than {v}",), less=("costing less than {v}",),
             most="most expensive", least="cheapest")  # fmt: skip
CITY = dict(equal=("in {v}", "located in {v}", "based in {v}"))
FROM = dict(equal=("from {v}",))


def age(lo: int, hi: int) -> ColumnSpec:
    return num("age", lo, hi, ("age",), **AGE)


def city(**kw) -> ColumnSpec:
    return cat("city", vocab.CITIES, ("city", "town"), "cities", **(kw or CITY))


def country(**kw) -> ColumnSpec:
    return cat("country", vocab.COUNTRIES, ("country", "nation"), "countries", **(kw or FROM))


# --- the domains ------------------------------------------------------------------------

MUSIC = Domain(
    "music",
    (
        TableSpec(
            "artist",
            (("artist", "artists"), ("musician", "musicians")),
            (key(), name(person), country(), age(18, 80)),
            (20, 60),
        ),
        TableSpec(
            "album",
            (("album", "albums"), ("record", "records")),
            (
                key(),
                name(title, "title", ("title",), "titles"),
                fk("artist_id", "artist", of=("by", "from"), has=("that released", "with"),
                   has_no=("that released no", "without")),
                year("year", 1970, 2023, ("year", "release year"), more=("released after {v}",),
                     less=("released before {v}",), between=("released between {a} and {b}",),
                     most="most recent", least="oldest"),
                num("sales", 1000, 900000, ("sales", "copies sold"), sum_ok=True),
                cat("genre", vocab.GENRES, ("genre", "style"), "genres"),
            ),
            (80, 250),
        ),
        TableSpec(
            "song",
            (("song", "songs"), ("track", "tracks")),
            (
                key(),
                name(title, "title", ("title",), "titles", unique=False),
                fk("album_id", "album", of=("on", "from"), has=("with", "containing"),
                   has_no=("without", "containing no")),
                num("length", 90, 480, ("length", "duration"), most="longest", least="shortest"),
                num("plays", 0, 50000, ("plays", "play count"), sum_ok=True),
            ),
            (200, 500),
        ),
    ),
)  # fmt: skip

SCHOOL = Domain(
    "school",
    (
        TableSpec(
            "student",
            (("student", "students"), ("pupil", "pupils")),
            (key(), name(person), cat("major", vocab.MAJORS, ("major", "field of study"),
                                      "majors"),
             age(17, 35), num("gpa", 1.5, 4.0, ("gpa", "grade point average"), digits=2)),
            (60, 200),
        ),
        TableSpec(
            "course",
            (("course", "courses"), ("class", "classes")),
            (key(), name(suffixed(vocab.MAJORS, ("101", "201", "301", "lab", "seminar")),
                         "title", ("title", "course title"), "titles"),
             cat("dept", vocab.DEPARTMENTS, ("department", "faculty"), "departments"),
             num("credits", 1, 6, ("credits", "credit count"), sum_ok=True)),
            (20, 50),
        ),
        TableSpec(
            "enroll",
            (("enrollment", "enrollments"), ("registration", "registrations")),
            (fk("student_id", "student"), fk("course_id", "course"),
             num("grade", 40, 100, ("grade", "mark", "score"))),
            (150, 500),
            primary_key=("student_id", "course_id"),
        ),
    ),
    (Bridge("enroll", "student_id", "course_id", ("that take", "enrolled in"),
            ("that take no", "not enrolled in any"), ("taken by", "attended by"),
            ("not taken by any", "attended by no")),),
)  # fmt: skip

LIBRARY = Domain(
    "library",
    (
        TableSpec(
            "author",
            (("author", "authors"), ("writer", "writers")),
            (key(), name(person), country(), year("born", 1900, 1995, ("birth year",),
                                                  more=("born after {v}",),
                                                  less=("born before {v}",)),),
            (20, 60),
        ),
        TableSpec(
            "book",
            (("book", "books"), ("volume", "volumes")),
            (key(), name(title, "title", ("title",), "titles"),
             fk("author_id", "author", of=("by", "written by"), has=("that wrote", "with"),
                has_no=("that wrote no", "without")),
             year("year", 1950, 2023, ("year", "publication year"),
                  more=("published after {v}",), less=("published before {v}",)),
             num("pages", 80, 900, ("pages", "page count"), sum_ok=True),
             num("price", 5, 80, ("price", "cost"), digits=2, **PRICE)),
            (80, 300),
        ),
        TableSpec(
            "member",
            (("member", "members"), ("reader", "readers")),
            (key(), name(person), city(equal=("from {v}", "living in {v}")), age(12, 85)),
            (40, 150),
        ),
        TableSpec(
            "loan",
            (("loan", "loans"), ("checkout", "checkouts")),
            (fk("book_id", "book"), fk("member_id", "member"),
             num("days", 1, 60, ("days", "loan length", "duration"), sum_ok=True)),
            (100, 400),
            primary_key=("book_id", "member_id"),
        ),
    ),
    (Bridge("loan", "book_id", "member_id", ("borrowed by",), ("never borrowed by",
                                                                "not borrowed by any"),
            ("that borrowed",), ("that borrowed no", "that never borrowed")),),
)  # fmt: skip

HOSPITAL = Domain(
    "hospital",
    (
        TableSpec(
            "doctor",
            (("doctor", "doctors"), ("physician", "physicians")),
            (key(), name(person), cat("specialty", vocab.SPECIALTIES, ("specialty", "field"),
                                      "specialties"),
             num("salary", 60000, 300000, ("salary", "pay"), sum_ok=True), age(28, 70)),
            (20, 60),
        ),
        TableSpec(
            "patient",
            (("patient", "patients"),),
            (key(), name(person), age(1, 95), city(equal=("from {v}", "living in {v}"))),
            (60, 250),
        ),
        TableSpec(
            "visit",
            (("visit", "visits"), ("appointment", "appointments")),
            (fk("doctor_id", "doctor"), fk("patient_id", "patient"),
             num("cost", 50, 2000, ("cost", "fee", "charge"), digits=2, sum_ok=True),
             year("year", 2010, 2023, ("year",), more=("after {v}",), less=("before {v}",))),
            (150, 500),
            primary_key=("doctor_id", "patient_id"),
        ),
    ),
    (Bridge("visit", "doctor_id", "patient_id", ("that treated", "that saw"),
            ("that treated no", "that saw no"), ("treated by", "seen by"),
            ("never treated by", "not seen by any")),),
)  # fmt: skip

SOCCER = Domain(
    "soccer",
    (
        TableSpec(
            "team",
            (("team", "teams"), ("club", "clubs")),
            (key(), name(suffixed(vocab.CITIES, ("United", "Rovers", "City", "Athletic",
                                                 "Wanderers"))),
             city(), year("founded", 1870, 2015, ("founding year", "year founded"),
                          more=("founded after {v}",), less=("founded before {v}",))),
            (20, 50),
        ),
        TableSpec(
            "player",
            (("player", "players"), ("footballer", "footballers")),
            (key(), name(person), fk("team_id", "team", of=("in", "playing for"),
                                     has=("with",), has_no=("without",)),
             cat("position", vocab.POSITIONS, ("position", "role"), "positions"),
             age(17, 40), num("goals", 0, 40, ("goals", "goals scored"), sum_ok=True)),
            (150, 450),
        ),
        TableSpec(
            "coach",
            (("coach", "coaches"), ("manager", "managers")),
            (key(), name(person), fk("team_id", "team", of=("of", "coaching"),
                                     has=("coached by",), has_no=("with no",)),
             age(30, 75), num("wins", 0, 400, ("wins", "victories"), sum_ok=True)),
            (20, 60),
        ),
    ),
)  # fmt: skip

RETAIL = Domain(
    "retail",
    (
        TableSpec(
            "store",
            (("store", "stores"), ("shop", "shops")),
            (key(), name(place), city(), num("size", 100, 5000, ("size", "floor area"),
                                              most="largest", least="smallest")),
            (20, 60),
        ),
        TableSpec(
            "product",
            (("product", "products"), ("item", "items")),
            (key(), name(title), cat("category", vocab.PRODUCT_CATEGORIES,
                                     ("category", "type"), "categories"),
             num("price", 1, 900, ("price", "cost"), digits=2, **PRICE)),
            (40, 200),
        ),
        TableSpec(
            "sale",
            (("sale", "sales"), ("sales record", "sales records")),
            (fk("store_id", "store"), fk("product_id", "product"),
             num("units", 1, 500, ("units", "units sold", "quantity"), sum_ok=True)),
            (150, 500),
            primary_key=("store_id", "product_id"),
        ),
    ),
    (Bridge("sale", "store_id", "product_id", ("that sold", "selling"),
            ("that sold no", "selling no"), ("sold at", "sold by"),
            ("never sold at", "not sold by any")),),
)  # fmt: skip

RESTAURANT = Domain(
    "restaurant",
    (
        TableSpec(
            "restaurant",
            (("restaurant", "restaurants"), ("eatery", "eateries")),
            (key(), name(suffixed(vocab.ADJECTIVES, ("Table", "Kitchen", "Bistro", "Grill",
                                                     "Spoon", "Garden"))),
             city(), cat("cuisine", vocab.CUISINES, ("cuisine", "food type"), "cuisines"),
             num("rating", 1, 5, ("rating", "star rating"), digits=1)),
            (20, 80),
        ),
        TableSpec(
            "dish",
            (("dish", "dishes"), ("meal", "meals")),
            (key(), name(suffixed(vocab.ADJECTIVES, ("Noodles", "Curry", "Salad", "Soup",
                                                     "Pie", "Tacos", "Risotto")),
                         unique=False),
             fk("restaurant_id", "restaurant", of=("at", "served at", "from"),
                has=("serving", "with"), has_no=("serving no", "without")),
             num("price", 3, 60, ("price", "cost"), digits=2, **PRICE),
             num("calories", 150, 1500, ("calories", "calorie count"))),
            (100, 400),
        ),
        TableSpec(
            "critic",
            (("critic", "critics"), ("reviewer", "reviewers")),
            (key(), name(person), age(22, 75), country()),
            (20, 50),
        ),
        TableSpec(
            "review",
            (("review", "reviews"),),
            (fk("critic_id", "critic"), fk("restaurant_id", "restaurant"),
             num("score", 1, 10, ("score", "mark"))),
            (100, 400),
            primary_key=("critic_id", "restaurant_id"),
        ),
    ),
    (Bridge("review", "restaurant_id", "critic_id", ("reviewed by", "rated by"),
            ("never reviewed by", "not rated by any"), ("that reviewed", "that rated"),
            ("that reviewed no", "that never rated")),),
)  # fmt: skip

COMPANY = Domain(
    "company",
    (
        TableSpec(
            "department",
            (("department", "departments"), ("division", "divisions")),
            (key(), name(suffixed(vocab.DEPT_NAMES, vocab.CITIES)),
             num("budget", 50000, 5000000, ("budget",), sum_ok=True),
             num("floor", 1, 30, ("floor", "floor number"))),
            (20, 40),
        ),
        TableSpec(
            "employee",
            (("employee", "employees"), ("worker", "workers"), ("staff member", "staff members")),
            (key(), name(person), fk("dept_id", "department", of=("in", "working in"),
                                     has=("with",), has_no=("without",)),
             num("salary", 30000, 250000, ("salary", "pay", "wage"), sum_ok=True),
             age(20, 67), cat("role", vocab.JOB_ROLES, ("role", "job title", "job"), "roles")),
            (100, 400),
        ),
        TableSpec(
            "project",
            (("project", "projects"),),
            (key(), name(title), num("budget", 10000, 2000000, ("budget",), sum_ok=True),
             year("year", 2005, 2024, ("year", "start year"), more=("started after {v}",),
                  less=("started before {v}",))),
            (20, 80),
        ),
        TableSpec(
            "assignment",
            (("assignment", "assignments"),),
            (fk("employee_id", "employee"), fk("project_id", "project"),
             num("hours", 1, 400, ("hours", "hours worked"), sum_ok=True)),
            (100, 400),
            primary_key=("employee_id", "project_id"),
        ),
    ),
    (Bridge("assignment", "employee_id", "project_id", ("working on", "assigned to"),
            ("working on no", "not assigned to any"), ("staffed by", "with"),
            ("not staffed by any", "without")),),
)  # fmt: skip

MOVIES = Domain(
    "movies",
    (
        TableSpec(
            "director",
            (("director", "directors"), ("filmmaker", "filmmakers")),
            (key(), name(person), country(), year("born", 1930, 1995, ("birth year",),
                                                  more=("born after {v}",),
                                                  less=("born before {v}",))),
            (20, 60),
        ),
        TableSpec(
            "movie",
            (("movie", "movies"), ("film", "films")),
            (key(), name(title, "title", ("title",), "titles"),
             fk("director_id", "director", of=("by", "directed by"),
                has=("that directed", "with"), has_no=("that directed no", "without")),
             year("year", 1960, 2024, ("year", "release year"), more=("released after {v}",),
                  less=("released before {v}",), most="newest", least="oldest"),
             num("rating", 1, 10, ("rating", "score"), digits=1),
             cat("genre", vocab.MOVIE_GENRES, ("genre", "kind"), "genres")),
            (80, 300),
        ),
        TableSpec(
            "actor",
            (("actor", "actors"), ("performer", "performers")),
            (key(), name(person), age(8, 90), country()),
            (40, 150),
        ),
        TableSpec(
            "appearance",
            (("appearance", "appearances"), ("role", "roles")),
            (fk("movie_id", "movie"), fk("actor_id", "actor"),
             num("fee", 1000, 5000000, ("fee", "pay"), sum_ok=True)),
            (150, 500),
            primary_key=("movie_id", "actor_id"),
        ),
    ),
    (Bridge("appearance", "movie_id", "actor_id", ("starring", "featuring"),
            ("starring no", "featuring no"), ("that appeared in", "that acted in"),
            ("that appeared in no", "that never acted in")),),
)  # fmt: skip

AIRLINE = Domain(
    "airline",
    (
        TableSpec(
            "airline",
            (("airline", "airlines"), ("carrier", "carriers")),
            (key(), name(suffixed(vocab.NOUNS, ("Air", "Airways", "Airlines", "Jet"))),
             country(equal=("from {v}", "based in {v}")),
             year("founded", 1920, 2020, ("founding year", "year founded"),
                  more=("founded after {v}",), less=("founded before {v}",))),
            (20, 60),
        ),
        TableSpec(
            "pilot",
            (("pilot", "pilots"), ("aviator", "aviators")),
            (key(), name(person), fk("airline_id", "airline", of=("of", "flying for"),
                                     has=("with", "employing"), has_no=("without",)),
             age(21, 65), num("hours", 200, 30000, ("flight hours", "hours flown"),
                              sum_ok=True)),
            (60, 250),
        ),
        TableSpec(
            "flight",
            (("flight", "flights"), ("route", "routes")),
            (key(), fk("airline_id", "airline", of=("operated by", "of"),
                       has=("operating", "with"), has_no=("operating no", "without")),
             cat("origin", vocab.CITIES, ("origin", "departure city"), "origins",
                 equal=("from {v}", "departing from {v}")),
             cat("dest", vocab.CITIES, ("destination", "arrival city"), "destinations",
                 equal=("to {v}", "arriving in {v}")),
             num("distance", 150, 12000, ("distance", "length"), sum_ok=True,
                 most="longest", least="shortest"),
             cat("aircraft", vocab.AIRCRAFT, ("aircraft", "plane type"), "aircraft types")),
            (100, 450),
        ),
    ),
)  # fmt: skip

# --- dev domains (never seen in train) ---------------------------------------------------

ZOO = Domain(
    "zoo",
    (
        TableSpec(
            "zoo",
            (("zoo", "zoos"), ("wildlife park", "wildlife parks")),
            (key(), name(suffixed(vocab.CITIES, ("Zoo", "Wildlife Park", "Safari", "Menagerie"))),
             city(), year("opened", 1850, 2015, ("opening year", "year opened"),
                          more=("opened after {v}",), less=("opened before {v}",)),
             num("area", 5, 300, ("area", "size"), sum_ok=True, most="largest",
                 least="smallest")),
            (20, 40),
        ),
        TableSpec(
            "animal",
            (("animal", "animals"), ("creature", "creatures")),
            (key(), name(pick(vocab.ANIMAL_NAMES), unique=False),
             cat("species", vocab.SPECIES, ("species", "kind of animal"), "species"),
             fk("zoo_id", "zoo", of=("in", "living in", "kept at"), has=("with", "housing"),
                has_no=("without", "housing no")),
             age(0, 40), num("weight", 5, 6000, ("weight", "mass"), sum_ok=True,
                             most="heaviest", least="lightest")),
            (100, 450),
        ),
        TableSpec(
            "keeper",
            (("keeper", "keepers"), ("zookeeper", "zookeepers")),
            (key(), name(person), fk("zoo_id", "zoo", of=("at", "working at"),
                                     has=("employing", "with"), has_no=("employing no",)),
             age(19, 70), num("salary", 20000, 90000, ("salary", "pay"), sum_ok=True)),
            (40, 150),
        ),
    ),
)  # fmt: skip

HOTEL = Domain(
    "hotel",
    (
        TableSpec(
            "hotel",
            (("hotel", "hotels"),),
            (key(), name(place), city(), num("stars", 1, 5, ("stars", "star rating")),
             num("rooms", 10, 900, ("rooms", "room count"), sum_ok=True)),
            (20, 60),
        ),
        TableSpec(
            "guest",
            (("guest", "guests"), ("visitor", "visitors")),
            (key(), name(person), country(), age(18, 90)),
            (60, 250),
        ),
        TableSpec(
            "stay",
            (("stay", "stays"), ("booking", "bookings")),
            (fk("hotel_id", "hotel"), fk("guest_id", "guest"),
             num("nights", 1, 30, ("nights", "number of nights"), sum_ok=True),
             num("cost", 50, 9000, ("cost", "bill", "amount paid"), digits=2, sum_ok=True)),
            (150, 500),
            primary_key=("hotel_id", "guest_id"),
        ),
    ),
    (Bridge("stay", "hotel_id", "guest_id", ("that hosted", "visited by"),
            ("that hosted no", "never visited by"), ("that stayed at", "that booked"),
            ("that never stayed at", "that booked no")),),
)  # fmt: skip

MUSEUM = Domain(
    "museum",
    (
        TableSpec(
            "museum",
            (("museum", "museums"), ("gallery", "galleries")),
            (key(), name(suffixed(vocab.CITIES, ("Museum", "Gallery", "Art House", "Collection"))),
             city(), year("opened", 1750, 2020, ("opening year", "year opened"),
                          more=("opened after {v}",), less=("opened before {v}",))),
            (20, 50),
        ),
        TableSpec(
            "painter",
            (("painter", "painters"), ("artist", "artists")),
            (key(), name(person), country(), year("born", 1400, 1990, ("birth year",),
                                                  more=("born after {v}",),
                                                  less=("born before {v}",))),
            (30, 100),
        ),
        TableSpec(
            "painting",
            (("painting", "paintings"), ("artwork", "artworks")),
            (key(), name(title, "title", ("title", "name"), "titles", unique=False),
             fk("painter_id", "painter", of=("by", "painted by"), has=("that painted",),
                has_no=("that painted no",)),
             fk("museum_id", "museum", of=("in", "held by"), has=("holding", "with"),
                has_no=("holding no", "without")),
             year("year", 1450, 2020, ("year", "year painted"), more=("painted after {v}",),
                  less=("painted before {v}",)),
             num("worth", 1000, 90000000, ("value", "estimated value", "worth"), sum_ok=True,
                 most="most valuable", least="least valuable")),
            (100, 450),
        ),
    ),
)  # fmt: skip

BANK = Domain(
    "bank",
    (
        TableSpec(
            "branch",
            (("branch", "branches"), ("office", "offices")),
            (key(), name(place), city(), year("opened", 1900, 2022, ("opening year",),
                                              more=("opened after {v}",),
                                              less=("opened before {v}",))),
            (20, 50),
        ),
        TableSpec(
            "customer",
            (("customer", "customers"), ("client", "clients")),
            (key(), name(person), fk("branch_id", "branch", of=("of", "banking at"),
                                     has=("with", "serving"), has_no=("without",)),
             age(18, 95), num("balance", 0, 250000, ("balance", "account balance"),
                              digits=2, sum_ok=True)),
            (80, 350),
        ),
        TableSpec(
            "loan",
            (("loan", "loans"), ("credit", "credits")),
            (key(), fk("customer_id", "customer", of=("of", "taken by"), has=("with",),
                       has_no=("without",)),
             num("amount", 500, 500000, ("amount", "principal"), sum_ok=True,
                 most="largest", least="smallest"),
             num("rate", 1, 15, ("rate", "interest rate"), digits=2),
             year("year", 2000, 2024, ("year",), more=("taken after {v}",),
                  less=("taken before {v}",))),
            (80, 400),
        ),
    ),
)  # fmt: skip

TRAIN_DOMAINS = (MUSIC, SCHOOL, LIBRARY, HOSPITAL, SOCCER, RETAIL, RESTAURANT, COMPANY,
                 MOVIES, AIRLINE)  # fmt: skip
DEV_DOMAINS = (ZOO, HOTEL, MUSEUM, BANK)
