"""In-memory types for interaction logs, item metadata and user features.

Ids stay strings end to end (the raw ids of the source files), so an exported
model takes exactly the ids a backend team has in its own tables.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np


@dataclasses.dataclass(frozen=True)
class Item:
    """Metadata of one item.

    Attributes:
        item_id: str. Raw id from the source file.
        title: str. Display title (may contain the year, as MovieLens titles do).
        genres: tuple of str.
        year: int or None. Release year, when known.
        description: str. Free text (empty when the source has none).
    """

    item_id: str
    title: str
    genres: tuple[str, ...] = ()
    year: int | None = None
    description: str = ""

    @property
    def text(self) -> str:
        """One string for the text tower: title (+ year) + genres (+ description)."""
        parts = [self.title]
        if self.year is not None and str(self.year) not in self.title:
            parts[0] = f"{self.title} ({self.year})"
        if self.genres:
            parts.append("Genres: " + ", ".join(self.genres))
        if self.description:
            parts.append(self.description)
        return ". ".join(p for p in parts if p)


@dataclasses.dataclass(frozen=True)
class User:
    """Demographic features of one user (MovieLens ``u.user`` / ``users.dat``).

    Attributes:
        user_id: str. Raw id from the source file.
        age: int or None. Age in years (ML-100K), or the age-group code of ML-1M, which
            is the group's lower bound (1 = "Under 18", 18 = "18-24", ..., 56 = "56+").
            None when unknown.
        gender: str. As written in the file (``"M"`` / ``"F"`` in MovieLens, not
            case-folded); empty when unknown.
        occupation: str. Occupation name (ML-1M's integer codes are mapped to the names
            of its README, e.g. ``"programmer"``); empty when unknown.
        zip_code: str. As written in the file (not always numeric); empty when unknown.
    """

    user_id: str
    age: int | None = None
    gender: str = ""
    occupation: str = ""
    zip_code: str = ""


@dataclasses.dataclass
class BadLineReport:
    """What was skipped when a reader runs with ``on_bad_line="skip"``."""

    count: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    def add(self, error: Exception) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(str(error))

    def merge(self, other: BadLineReport) -> None:
        self.count += other.count
        self.examples.extend(other.examples[: max(0, 5 - len(self.examples))])


@dataclasses.dataclass
class Interactions:
    """An interaction log in file order (one row = one implicit positive).

    Attributes:
        user_ids: np.ndarray of str, [n].
        item_ids: np.ndarray of str, [n].
        timestamps: np.ndarray of int64, [n]. Seconds (or any monotone integer clock).
        ratings: np.ndarray of float32, [n]. NaN where the source has no rating.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray
    ratings: np.ndarray

    def __post_init__(self):
        n = len(self.user_ids)
        for name in ("item_ids", "timestamps", "ratings"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Interactions.{name} has {len(getattr(self, name))} rows, user_ids has {n}")

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def from_rows(cls, users, items, timestamps, ratings) -> Interactions:
        return cls(
            user_ids=np.asarray(users, dtype=object).astype(str),
            item_ids=np.asarray(items, dtype=object).astype(str),
            timestamps=np.asarray(timestamps, dtype=np.int64),
            ratings=np.asarray(ratings, dtype=np.float32),
        )

    def quality_notes(self) -> list[str]:
        """What is legal but probably unintended: repeated rows, negative timestamps/ratings."""
        notes = []
        if 0 < len(self.user_ids) <= 5_000_000:  # (sorting 25M string ids would take a while)
            users = np.unique(self.user_ids, return_inverse=True)[1]
            items = np.unique(self.item_ids, return_inverse=True)[1]
            order = np.lexsort((self.timestamps, items, users))
            rows = np.stack([users[order], items[order], self.timestamps[order]], axis=1)
            duplicates = int(np.sum(np.all(rows[1:] == rows[:-1], axis=1)))
            if duplicates:
                notes.append(f"{duplicates} row(s) repeat an earlier (user_id, item_id, timestamp); "
                             "each counts as an interaction")
        negative = int(np.sum(self.timestamps < 0))
        if negative:
            notes.append(f"{negative} timestamp(s) are negative (before 1970 as Unix seconds?)")
        ratings = self.ratings[np.isfinite(self.ratings)]
        if np.any(ratings < 0):
            notes.append(f"{int(np.sum(ratings < 0))} rating(s) are negative")
        return notes

    def take(self, index: np.ndarray) -> Interactions:
        return Interactions(
            self.user_ids[index], self.item_ids[index], self.timestamps[index], self.ratings[index]
        )


@dataclasses.dataclass
class Dataset:
    """Interactions plus item metadata and user features, as read from one source.

    Attributes:
        name: str. E.g. ``"ml-100k"``.
        interactions: Interactions.
        items: dict str -> Item. May lack items that only occur in interactions.
        source: str. Where it was read from.
        skipped: BadLineReport. Lines skipped with ``on_bad_line="skip"``.
        users: dict str -> User. User features; empty when the source has none, and may
            lack users that only occur in interactions (see :meth:`user`).
        items_source: str. The file the items were read from ("" when they came with
            ``source`` or there are none).
    """

    name: str
    interactions: Interactions
    items: dict[str, Item]
    source: str = ""
    skipped: BadLineReport = dataclasses.field(default_factory=BadLineReport)
    users: dict[str, User] = dataclasses.field(default_factory=dict)
    items_source: str = ""

    def item_text(self, item_id: str) -> str:
        item = self.items.get(item_id)
        return item.text if item is not None else item_id

    def item_title(self, item_id: str) -> str:
        item = self.items.get(item_id)
        return item.title if item is not None else item_id

    def user(self, user_id: str) -> User:
        """The user's features, or ``User(user_id)`` (every feature unknown) when absent."""
        user = self.users.get(user_id)
        return user if user is not None else User(user_id)

    def subset_users(self, user_ids) -> Dataset:
        """The same data restricted to some users (for quick runs and tests); ``users`` too."""
        wanted = np.asarray(list(user_ids), dtype=str)
        keep = np.isin(self.interactions.user_ids, wanted)
        wanted_set = set(wanted.tolist())
        return dataclasses.replace(self, interactions=self.interactions.take(np.flatnonzero(keep)),
                                   users={k: v for k, v in self.users.items() if k in wanted_set})


_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


def year_from_title(title: str) -> int | None:
    """MovieLens titles end with ``(YYYY)``."""
    match = _YEAR_IN_TITLE.search(title.strip())
    return int(match.group(1)) if match else None
