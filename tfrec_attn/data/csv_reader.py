"""The generic interaction CSV reader: bring your own data.

Interactions: a CSV with a header naming ``user_id,item_id,timestamp`` and
optionally ``rating`` (any column order, extra columns ignored). Items (optional):
a CSV with ``item_id,title`` and optionally ``text`` and ``genres``
(``|``-separated).
"""

from __future__ import annotations

import os

from tfrec_attn.data import readers
from tfrec_attn.data.dataset import Dataset, Interactions, Item, year_from_title
from tfrec_attn.data.errors import DataFileError, DataFormatError

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_COLUMNS = ("item_id", "title")


def _column_index(path, header: list[str], required, optional) -> dict[str, int]:
    index = {name: i for i, name in enumerate(header)}
    missing = [name for name in required if name not in index]
    if missing:
        raise DataFormatError(
            path, 1, missing[0],
            f"header lacks required column(s) {missing}; it must name {list(required)}"
            + (f" and may name {list(optional)}" if optional else ""), ",".join(header))
    return {name: index[name] for name in (*required, *optional) if name in index}


def _rows(path, required, optional):
    """Yields ``(line, fields, columns)`` of a headered CSV whose rows reach every named column."""
    header = readers.read_header(path)
    cols = _column_index(path, header, required, optional)
    width = max(cols.values()) + 1
    for line, fields in readers.iter_records(path, sep=",", quoted=True, skip_header=True):
        if len(fields) < width or len(fields) > len(header):
            field = header[len(fields)] if len(fields) < width else "<line>"
            error = DataFormatError(path, line, field,
                                    f"expected {len(header)} fields ({','.join(header)}), found {len(fields)}")
            yield line, error, cols
        else:
            yield line, fields, cols


def read_interactions_csv(path, *, on_bad_line: str = "error", policy=None) -> Interactions:
    """Reads ``user_id,item_id,timestamp[,rating]`` (header required)."""
    path = os.fspath(path)
    policy = policy or readers.BadLinePolicy(on_bad_line)
    users, items, times, ratings = [], [], [], []
    for line, fields, cols in _rows(path, INTERACTION_COLUMNS, ("rating",)):
        try:
            if isinstance(fields, DataFormatError):
                raise fields
            user = readers.parse_id(path, line, "user_id", fields[cols["user_id"]])
            item = readers.parse_id(path, line, "item_id", fields[cols["item_id"]])
            ts = readers.parse_int(path, line, "timestamp", fields[cols["timestamp"]])
            rating = (readers.parse_float(path, line, "rating", fields[cols["rating"]])
                      if "rating" in cols else float("nan"))
        except DataFormatError as error:
            policy.handle(error)
            continue
        users.append(user)
        items.append(item)
        times.append(ts)
        ratings.append(rating)
    if not users:
        raise DataFileError(path, "no interactions after the header" if not policy.report.count else
                            f"no valid interactions (all {policy.report.count} rows were skipped)")
    return Interactions.from_rows(users, items, times, ratings)


def read_items_csv(path, *, on_bad_line: str = "error", policy=None) -> dict[str, Item]:
    """Reads ``item_id,title[,text][,genres]`` (header required, genres ``|``-separated)."""
    path = os.fspath(path)
    policy = policy or readers.BadLinePolicy(on_bad_line)
    items: dict[str, Item] = {}
    for line, fields, cols in _rows(path, ITEM_COLUMNS, ("text", "genres")):
        try:
            if isinstance(fields, DataFormatError):
                raise fields
            item_id = readers.parse_id(path, line, "item_id", fields[cols["item_id"]])
            if item_id in items:
                raise DataFormatError(path, line, "item_id", "duplicate item id", item_id)
        except DataFormatError as error:
            policy.handle(error)
            continue
        title = fields[cols["title"]].strip()
        genres = tuple(g for g in fields[cols["genres"]].split("|") if g.strip()) if "genres" in cols else ()
        description = fields[cols["text"]].strip() if "text" in cols else ""
        items[item_id] = Item(item_id, title, genres, year_from_title(title), description)
    return items


def read_csv_dataset(interactions_path, items_path=None, *, on_bad_line: str = "error",
                     name: str | None = None) -> Dataset:
    """A :class:`Dataset` from the generic CSV format."""
    policy = readers.BadLinePolicy(on_bad_line)
    interactions = read_interactions_csv(interactions_path, policy=policy)
    items = read_items_csv(items_path, policy=policy) if items_path else {}
    return Dataset(name or os.path.splitext(os.path.basename(interactions_path))[0],
                   interactions, items, source=os.fspath(interactions_path), skipped=policy.report)
