"""In-memory types for interaction logs and item metadata.

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
    """Interactions plus item metadata, as read from one source.

    Attributes:
        name: str. E.g. ``"ml-100k"``.
        interactions: Interactions.
        items: dict str -> Item. May lack items that only occur in interactions.
        source: str. Where it was read from.
        skipped: BadLineReport. Lines skipped with ``on_bad_line="skip"``.
    """

    name: str
    interactions: Interactions
    items: dict[str, Item]
    source: str = ""
    skipped: BadLineReport = dataclasses.field(default_factory=BadLineReport)

    def item_text(self, item_id: str) -> str:
        item = self.items.get(item_id)
        return item.text if item is not None else item_id

    def item_title(self, item_id: str) -> str:
        item = self.items.get(item_id)
        return item.title if item is not None else item_id

    def subset_users(self, user_ids) -> Dataset:
        """The same data restricted to some users (for quick runs and tests)."""
        keep = np.isin(self.interactions.user_ids, np.asarray(list(user_ids), dtype=str))
        return dataclasses.replace(self, interactions=self.interactions.take(np.flatnonzero(keep)))


_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


def year_from_title(title: str) -> int | None:
    """MovieLens titles end with ``(YYYY)``."""
    match = _YEAR_IN_TITLE.search(title.strip())
    return int(match.group(1)) if match else None
