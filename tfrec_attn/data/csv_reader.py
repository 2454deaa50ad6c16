"""The generic interaction CSV reader: bring your own data.

Interactions: a CSV with a header naming ``user_id,item_id,timestamp`` and
optionally ``rating`` (any column order, extra columns ignored). Items (optional):
a CSV with ``item_id,title`` and optionally ``text`` and ``genres``
(``|``-separated).

Both are read as CSV (RFC 4180 quoting). In the items file a quoted ``text`` value may
span lines (a multi-line description is one record, numbered by its first line); a line
break in any other value of it is a bad record. In the interactions file no value may
span lines: a quote left open at the end of a line makes that line a bad line
(``FILE:LINE: field 'NAME': unclosed quote ...``), never a record cut at the line break.
"""

from __future__ import annotations

import os

from tfrec_attn.data import readers
from tfrec_attn.data.dataset import Dataset, Interactions, Item, year_from_title
from tfrec_attn.data.errors import DataFileError, DataFormatError

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_COLUMNS = ("item_id", "title")
MULTILINE_COLUMNS = ("text",)  # free text: a quoted value may span lines (CSV allows it)


def _column_index(path, header: list[str], required, optional) -> dict[str, int]:
    index = {name: i for i, name in enumerate(header)}
    missing = [name for name in required if name not in index]
    if missing:
        raise DataFormatError(
            path, 1, missing[0],
            f"header lacks required column(s) {missing}; it must name {list(required)}"
            + (f" and may name {list(optional)}" if optional else ""), ",".join(header))
    return {name: index[name] for name in (*required, *optional) if name in index}


def _rows(path, required, optional, policy, *, multiline: bool = False):
    """Yields ``(line, end_line, fields, columns)`` of a headered CSV; ``fields`` is a
    :class:`DataFormatError` for a record that does not reach every named column.

    ``multiline``: quoted values may span lines (free-text columns); otherwise a quote
    left open at the end of a line is a bad line (reported through ``policy``).
    """
    header = readers.read_header(path)
    cols = _column_index(path, header, required, optional)
    width = max(cols.values()) + 1
    if multiline:
        records = readers.iter_csv_records(path, sep=",", skip_header=True, names=header, policy=policy)
    else:
        records = ((line, line, fields) for line, fields in
                   readers.iter_records(path, sep=",", quoted=True, skip_header=True, names=header,
                                        policy=policy))
    for line, end, fields in records:
        if len(fields) < width or len(fields) > len(header):
            field = header[len(fields)] if len(fields) < width else "<line>"
            span = f" in the record on lines {line}-{end} (a quoted value spans line breaks)" if end > line else ""
            error = DataFormatError(path, line, field,
                                    f"expected {len(header)} fields ({','.join(header)}), found {len(fields)}{span}")
            yield line, end, error, cols
        else:
            yield line, end, fields, cols


def read_interactions_csv(path, *, on_bad_line: str = "error", policy=None) -> Interactions:
    """Reads ``user_id,item_id,timestamp[,rating]`` (header required)."""
    path = os.fspath(path)
    policy = policy or readers.BadLinePolicy(on_bad_line)
    users, items, times, ratings = [], [], [], []
    for line, _, fields, cols in _rows(path, INTERACTION_COLUMNS, ("rating",), policy):
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
    for line, end, fields, cols in _rows(path, ITEM_COLUMNS, ("text", "genres"), policy, multiline=True):
        try:
            if isinstance(fields, DataFormatError):
                raise fields
            for name, column in cols.items():
                if name not in MULTILINE_COLUMNS and ("\n" in fields[column] or "\r" in fields[column]):
                    raise DataFormatError(
                        path, line, name, f"contains a line break (its quoted value runs from line {line} to "
                        f"{end}); only {', '.join(repr(c) for c in MULTILINE_COLUMNS)} may span lines",
                        readers.excerpt(fields[column]))
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
                   interactions, items, source=os.fspath(interactions_path), skipped=policy.report,
                   items_source=os.fspath(items_path) if items_path else "")
