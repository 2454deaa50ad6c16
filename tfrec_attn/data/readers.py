"""Line-level parsing shared by every reader: records, typed fields, precise errors."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator, Sequence

from tqdm.auto import tqdm

from tfrec_attn.data.dataset import BadLineReport
from tfrec_attn.data.errors import DataFileError, DataFormatError, DataNotFoundError

_INT64 = (-(2 ** 63), 2 ** 63 - 1)
BOM = "\ufeff"  # spreadsheet exports start UTF-8 files with it


def check_file(path) -> str:
    """``path`` as a string if it is a readable, non-empty file; else a one-line error."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataFileError(path, "is a directory, not a data file")
    if os.path.getsize(path) == 0:
        raise DataFileError(path, "is empty")
    return path

# Files above this size get a progress bar while they are read.
_PROGRESS_BYTES = 8 << 20


def parse_id(path, line: int, field: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise DataFormatError(path, line, field, "empty id")
    return value


def parse_int(path, line: int, field: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise DataFormatError(path, line, field, "not an integer", value) from None
    if not _INT64[0] <= number <= _INT64[1]:
        raise DataFormatError(path, line, field, "outside the 64-bit integer range", value)
    return number


def parse_float(path, line: int, field: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise DataFormatError(path, line, field, "not a number", value) from None
    if not math.isfinite(number):
        raise DataFormatError(path, line, field, "not a finite number", value)
    return number


def decode_line(raw: bytes, encoding: str) -> str:
    """Decodes one line; ``"auto"`` = UTF-8, else latin-1 (GroupLens files exist in both)."""
    if encoding != "auto":
        return raw.decode(encoding)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _decoded_lines(path, handle, encoding: str, bar, skip_header: bool):
    """Yields ``(line_number, text)`` of each line, decoded, line ending kept (CRLF -> LF)."""
    for line_number, raw in enumerate(handle, start=1):
        bar.update(len(raw))
        if line_number == 1 and skip_header:
            continue
        try:
            line = decode_line(raw, encoding)
        except UnicodeDecodeError as error:
            raise DataFormatError(path, line_number, "<line>",
                                  f"not valid {encoding.upper()} (byte 0x{raw[error.start]:02x} at column "
                                  f"{error.start + 1}); save the file as {encoding.upper()}") from None
        if line_number == 1:
            line = line.removeprefix(BOM)
        if line.endswith("\r\n"):
            line = line[:-2] + "\n"
        yield line_number, line


def _field_name(names, index: int) -> str:
    return names[index] if names and 0 <= index < len(names) else "<line>"


def excerpt(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for an error message."""
    text = text.rstrip("\n")
    return text if len(text) <= limit else text[:limit] + "..."


def _report(policy, error: DataFormatError) -> None:
    if policy is None:
        raise error
    policy.handle(error)


def _parse_quoted_line(path, line_number: int, line: str, sep: str, names, policy):
    """One line as CSV fields, or None (reported) when a quote opened on it does not close on it."""
    # A second, empty line after it: a record that needs it has an unclosed quote.
    reader = csv.reader(iter((line + "\n", "\n")), delimiter=sep)
    try:
        fields = next(reader)
    except csv.Error as error:
        _report(policy, DataFormatError(path, line_number, "<line>", f"not valid CSV: {error}", excerpt(line)))
        return None
    if reader.line_num > 1:
        _report(policy, DataFormatError(
            path, line_number, _field_name(names, len(fields) - 1),
            "unclosed quote: a quoted value opened on this line does not close on it "
            "(values in this file may not span lines)", excerpt(line)))
        return None
    return fields


def iter_records(
    path: str | os.PathLike,
    *,
    sep: str,
    encoding: str = "utf-8",
    quoted: bool = False,
    skip_header: bool = False,
    names: Sequence[str] | None = None,
    policy: BadLinePolicy | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """Yields ``(line_number, fields)`` for each non-empty line (1-based line numbers).

    One record per line: with ``quoted``, a quote that does not close on its own line is
    a bad line (reported through ``policy``; raised without one), never a record cut at
    the line break. :func:`iter_csv_records` reads quoted values that span lines.

    Args:
        sep: str. Field separator; may be several characters (``"::"``) unless ``quoted``.
        encoding: str. A codec, or ``"auto"``: UTF-8 per line, latin-1 where that fails.
        quoted: bool. Parse CSV quoting (titles with commas in ``movies.csv``).
        skip_header: bool. The first line is a header.
        names: sequence of str. Column names, to name the field of an unclosed quote.
        policy: BadLinePolicy. Where lines that are not valid CSV go (default: raise).
    """
    path = check_file(path)
    size = os.path.getsize(path)
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {os.path.basename(path)}",
               disable=size < _PROGRESS_BYTES, leave=False)
    with open(path, "rb") as handle:
        for line_number, line in _decoded_lines(path, handle, encoding, bar, skip_header):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if quoted:
                fields = _parse_quoted_line(path, line_number, line, sep, names, policy)
                if fields is None:
                    continue
            else:
                fields = line.split(sep)
            yield line_number, fields
    bar.close()


def iter_csv_records(
    path: str | os.PathLike,
    *,
    sep: str = ",",
    encoding: str = "utf-8",
    skip_header: bool = True,
    names: Sequence[str] | None = None,
    policy: BadLinePolicy | None = None,
) -> Iterator[tuple[int, int, list[str]]]:
    """Yields ``(first_line, last_line, fields)`` per CSV record: quoted values may span lines.

    For files with free-text columns (a multi-line description is legitimate CSV). Blank
    lines are skipped. A quote still open at the end of the file is a bad record
    (reported through ``policy``, raised without one) naming the line it opened on.
    """
    path = check_file(path)
    size = os.path.getsize(path)
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {os.path.basename(path)}",
               disable=size < _PROGRESS_BYTES, leave=False)
    state = {"line": 1 if skip_header else 0, "text": "", "eof": False}

    def lines():
        for line_number, line in _decoded_lines(path, handle, encoding, bar, skip_header):
            state["line"], state["text"] = line_number, line
            yield line
        state["line"] += 1  # the sentinel: a record that reads it had an unclosed quote
        state["text"], state["eof"] = "", True
        yield ""

    with open(path, "rb") as handle:
        reader = csv.reader(lines(), delimiter=sep)
        last = state["line"]
        while True:
            first = last + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                raise DataFormatError(path, first, "<line>", f"not valid CSV: {error}") from None
            last = state["line"]
            if state["eof"]:
                if first == last:  # the sentinel alone: the file ended between records
                    break
                _report(policy, DataFormatError(
                    path, first, _field_name(names, len(fields) - 1),
                    f"unclosed quote: the quoted value runs from this line to the end of the file "
                    f"(line {last - 1})"))
                break
            if first == last and not state["text"].strip():
                continue
            yield first, last, fields
    bar.close()


def check_field_count(path, line: int, fields: Sequence[str], names: Sequence[str],
                      optional: int = 0) -> None:
    """Raises unless ``len(names) - optional <= len(fields) <= len(names)``."""
    low, high = len(names) - optional, len(names)
    if not low <= len(fields) <= high:
        expected = str(high) if low == high else f"{low} to {high}"
        raise DataFormatError(
            path, line, names[min(len(fields), high - 1)] if len(fields) < low else "<line>",
            f"expected {expected} fields ({', '.join(names)}), found {len(fields)}",
        )


def read_header(path, *, encoding: str = "utf-8", sep: str = ",") -> list[str]:
    """The lower-cased column names of a file's first line (a UTF-8 BOM is skipped)."""
    path = check_file(path)
    with open(path, "rb") as handle:
        raw = handle.readline()
    try:
        first = raw.decode(encoding).rstrip("\r\n").removeprefix(BOM)
    except UnicodeDecodeError as error:
        raise DataFormatError(path, 1, "<header>", f"not valid {encoding.upper()} (byte 0x{raw[error.start]:02x} "
                              f"at column {error.start + 1}); save the file as {encoding.upper()}") from None
    if not first.strip():
        raise DataFileError(path, "the first line is empty; it must be the header")
    return [name.strip().lower() for name in next(csv.reader(io.StringIO(first), delimiter=sep))]


class BadLinePolicy:
    """Either re-raise a record's error or count it, per ``on_bad_line``."""

    def __init__(self, on_bad_line: str, report: BadLineReport | None = None):
        if on_bad_line not in ("error", "skip"):
            raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
        self.skip = on_bad_line == "skip"
        self.report = report if report is not None else BadLineReport()

    def handle(self, error: DataFormatError) -> None:
        if not self.skip:
            raise error
        self.report.add(error)
