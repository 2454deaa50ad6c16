"""MovieLens readers (100K, 1M, latest-small / 25M) in the original GroupLens formats."""

from __future__ import annotations

import dataclasses
import os

from tfrec_attn.data import readers
from tfrec_attn.data.dataset import Dataset, Interactions, Item, User, year_from_title
from tfrec_attn.data.errors import DataFormatError, DataNotFoundError

# ML-100K's u.genre, in the column order of u.item's 19 genre flags.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)

# ML-1M's README: users.dat's Occupation code -> name (the code is the index).
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)

# ML-1M's README: users.dat's Age code (the group's lower bound) -> age range.
ML1M_AGE_GROUPS = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}

# The fields of u.user (ML-100K) and users.dat (ML-1M), in file order.
ML100K_USER_FIELDS = ("user_id", "age", "gender", "occupation", "zip_code")
ML1M_USER_FIELDS = ("user_id", "gender", "age", "occupation", "zip_code")


@dataclasses.dataclass(frozen=True)
class Release:
    """A GroupLens MovieLens release.

    Attributes:
        name: str. Our name for it (``ml-100k``).
        url: str. The archive at files.grouplens.org.
        md5: str or None. Pinned MD5 of the archive; None for the "latest" releases,
            which GroupLens re-issues: their ``.md5`` file next to the archive is used.
        files: tuple of str. Files that must be in the extracted directory.
        layout: str. ``100k``, ``1m`` or ``csv``.
    """

    name: str
    url: str
    md5: str | None
    files: tuple[str, ...]
    layout: str


_BASE = "https://files.grouplens.org/datasets/movielens/"
RELEASES = {
    r.name: r
    for r in (
        Release("ml-100k", _BASE + "ml-100k.zip", "0e33842e24a9c977be4e0107933c0723",
                ("u.data", "u.item", "u.user"), "100k"),
        Release("ml-1m", _BASE + "ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906",
                ("ratings.dat", "movies.dat", "users.dat"), "1m"),
        Release("ml-25m", _BASE + "ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada",
                ("ratings.csv", "movies.csv"), "csv"),
        Release("ml-latest-small", _BASE + "ml-latest-small.zip", None,
                ("ratings.csv", "movies.csv"), "csv"),
    )
}


def detect_layout(directory) -> str | None:
    """``100k``/``1m``/``csv`` from the files present, or None."""
    for layout, marker in (("100k", "u.data"), ("1m", "ratings.dat"), ("csv", "ratings.csv")):
        if os.path.isfile(os.path.join(directory, marker)):
            return layout
    return None


def read_ml100k(directory, *, on_bad_line: str = "error") -> Dataset:
    """``u.data`` (tab-separated user, item, rating, timestamp) + ``u.item`` (latin-1)
    + ``u.user`` (``user id | age | gender | occupation | zip code``; optional).

    Args:
        directory: str. The extracted ``ml-100k`` folder.
        on_bad_line: str. ``error`` (raise :class:`DataFormatError`) or ``skip`` (count
            the line in ``Dataset.skipped``).

    Returns:
        Dataset. ``users`` is empty when there is no ``u.user``.
    """
    policy = readers.BadLinePolicy(on_bad_line)
    interactions = _read_ratings(os.path.join(directory, "u.data"), sep="\t", encoding="utf-8", skip_header=False,
                                 policy=policy)

    items: dict[str, Item] = {}
    path = os.path.join(directory, "u.item")
    names = ("item_id", "title", "release_date", "video_release_date", "imdb_url") + tuple(
        f"genre[{g}]" for g in ML100K_GENRES)
    for line, fields in readers.iter_records(path, sep="|", encoding="auto"):
        try:
            readers.check_field_count(path, line, fields, names)
            item_id = readers.parse_id(path, line, "item_id", fields[0])
            flags = [readers.parse_int(path, line, names[5 + i], f) for i, f in enumerate(fields[5:])]
        except DataFormatError as error:
            policy.handle(error)
            continue
        title = fields[1].strip()
        date = fields[2].strip()
        year = year_from_title(title) or (int(date[-4:]) if date[-4:].isdigit() else None)
        genres = tuple(g for g, flag in zip(ML100K_GENRES, flags) if flag and g != "unknown")
        items[item_id] = Item(item_id, title, genres, year)
    users = _read_users(os.path.join(directory, "u.user"), "|", ML100K_USER_FIELDS, _ml100k_user, policy)
    return Dataset("ml-100k", interactions, items, source=os.fspath(directory), skipped=policy.report,
                   users=users)


def read_ml1m(directory, *, on_bad_line: str = "error") -> Dataset:
    """``ratings.dat`` / ``movies.dat`` / ``users.dat`` (``::``-separated, latin-1).

    ``users.dat`` (``UserID::Gender::Age::Occupation::Zip-code``) is optional. Its Age is
    an age-group code (kept as ``User.age``, see :data:`ML1M_AGE_GROUPS`) and its
    Occupation code is mapped to the README's name (:data:`ML1M_OCCUPATIONS`).

    Args:
        directory: str. The extracted ``ml-1m`` folder.
        on_bad_line: str. ``error`` (raise :class:`DataFormatError`) or ``skip`` (count
            the line in ``Dataset.skipped``).

    Returns:
        Dataset. ``users`` is empty when there is no ``users.dat``.
    """
    policy = readers.BadLinePolicy(on_bad_line)
    interactions = _read_ratings(os.path.join(directory, "ratings.dat"), sep="::", encoding="auto", skip_header=False,
                                 policy=policy)
    items = _read_movies(os.path.join(directory, "movies.dat"), "::", "auto", False, policy)
    users = _read_users(os.path.join(directory, "users.dat"), "::", ML1M_USER_FIELDS, _ml1m_user, policy)
    return Dataset("ml-1m", interactions, items, source=os.fspath(directory), skipped=policy.report, users=users)


def read_ml_csv(directory, *, on_bad_line: str = "error", name: str = "ml-latest") -> Dataset:
    """``ratings.csv`` / ``movies.csv`` (ml-latest-small, ml-20m, ml-25m)."""
    policy = readers.BadLinePolicy(on_bad_line)
    interactions = _read_ratings(os.path.join(directory, "ratings.csv"), sep=",", encoding="utf-8", skip_header=True,
                                 policy=policy)
    items = _read_movies(os.path.join(directory, "movies.csv"), ",", "utf-8", True, policy)
    return Dataset(name, interactions, items, source=os.fspath(directory), skipped=policy.report)


def _read_ratings(path, *, sep, encoding, skip_header, policy) -> Interactions:
    """``user, item, rating, timestamp`` rows: the field order of every MovieLens release."""
    names = ("user_id", "item_id", "rating", "timestamp")
    rows = ([], [], [], [])
    for line, fields in readers.iter_records(path, sep=sep, encoding=encoding,
                                             skip_header=skip_header):
        try:
            readers.check_field_count(path, line, fields, names)
            parsed = (
                readers.parse_id(path, line, "user_id", fields[0]),
                readers.parse_id(path, line, "item_id", fields[1]),
                readers.parse_int(path, line, "timestamp", fields[3]),
                readers.parse_float(path, line, "rating", fields[2]),
            )
        except DataFormatError as error:
            policy.handle(error)
            continue
        for column, value in zip(rows, parsed):
            column.append(value)
    return Interactions.from_rows(*rows)


def _read_movies(path, sep, encoding, csv_format, policy) -> dict[str, Item]:
    items: dict[str, Item] = {}
    if not os.path.isfile(path):
        return items
    names = ("item_id", "title", "genres")
    for line, fields in readers.iter_records(path, sep=sep, encoding=encoding, quoted=csv_format,
                                             skip_header=csv_format, names=names, policy=policy):
        try:
            readers.check_field_count(path, line, fields, names)
            item_id = readers.parse_id(path, line, "item_id", fields[0])
        except DataFormatError as error:
            policy.handle(error)
            continue
        title = fields[1].strip()
        genres = tuple(g for g in fields[2].split("|") if g and g != "(no genres listed)")
        items[item_id] = Item(item_id, title, genres, year_from_title(title))
    return items


def _read_users(path, sep, names, parse, policy) -> dict[str, User]:
    """User id -> :class:`User` from a MovieLens user file; empty when there is none.

    Args:
        names: tuple of str. The file's fields, in order (they name the field of an error).
        parse: callable ``(path, line, fields) -> User`` raising :class:`DataFormatError`.
    """
    users: dict[str, User] = {}
    if not os.path.isfile(path):
        return users
    for line, fields in readers.iter_records(path, sep=sep, encoding="auto"):
        try:
            readers.check_field_count(path, line, fields, names)
            user = parse(path, line, fields)
            if user.user_id in users:
                raise DataFormatError(path, line, "user_id", "duplicate user id", user.user_id)
        except DataFormatError as error:
            policy.handle(error)
            continue
        users[user.user_id] = user
    return users


def _parse_age(path, line: int, value: str) -> int | None:
    """A non-negative integer age; a blank field is an unknown age (None)."""
    if not value.strip():
        return None
    age = readers.parse_int(path, line, "age", value)
    if age < 0:
        raise DataFormatError(path, line, "age", "negative age", value)
    return age


def _ml100k_user(path, line: int, fields) -> User:
    """``user id | age | gender | occupation | zip code``."""
    return User(
        user_id=readers.parse_id(path, line, "user_id", fields[0]),
        age=_parse_age(path, line, fields[1]),
        gender=fields[2].strip(),
        occupation=fields[3].strip(),
        zip_code=fields[4].strip(),
    )


def _ml1m_user(path, line: int, fields) -> User:
    """``UserID::Gender::Age::Occupation::Zip-code`` with ML-1M's age and occupation codes."""
    user_id = readers.parse_id(path, line, "user_id", fields[0])
    age = readers.parse_int(path, line, "age", fields[2])
    if age not in ML1M_AGE_GROUPS:
        raise DataFormatError(path, line, "age", "not an ML-1M age-group code (expected one of "
                              f"{', '.join(map(str, ML1M_AGE_GROUPS))})", fields[2])
    code = readers.parse_int(path, line, "occupation", fields[3])
    if not 0 <= code < len(ML1M_OCCUPATIONS):
        raise DataFormatError(path, line, "occupation",
                              f"not an ML-1M occupation code (expected 0 to {len(ML1M_OCCUPATIONS) - 1})", fields[3])
    return User(user_id, age, fields[1].strip(), ML1M_OCCUPATIONS[code], fields[4].strip())


def read_movielens(directory, *, on_bad_line: str = "error") -> Dataset:
    """Reads any supported MovieLens directory, detecting the release from its files."""
    layout = detect_layout(directory)
    if layout is None:
        raise DataNotFoundError(
            f"{directory}: no MovieLens files found. Expected u.data + u.item (ML-100K), "
            "ratings.dat + movies.dat (ML-1M) or ratings.csv + movies.csv (ml-latest-small, ML-25M)."
        )
    if layout == "100k":
        return read_ml100k(directory, on_bad_line=on_bad_line)
    if layout == "1m":
        return read_ml1m(directory, on_bad_line=on_bad_line)
    return read_ml_csv(directory, on_bad_line=on_bad_line,
                       name=os.path.basename(os.path.normpath(directory)) or "ml-latest")
