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


def iter_records(
    path: str | os.PathLike,
    *,
    sep: str,
    encoding: str = "utf-8",
    quoted: bool = False,
    skip_header: bool = False,
) -> Iterator[tuple[int, list[str]]]:
    """Yields ``(line_number, fields)`` for each non-empty line (1-based line numbers).

    Args:
        sep: str. Field separator; may be several characters (``"::"``) unless ``quoted``.
        encoding: str. A codec, or ``"auto"``: UTF-8 per line, latin-1 where that fails.
        quoted: bool. Parse CSV quoting (titles with commas in ``movies.csv``).
        skip_header: bool. The first line is a header.
    """
    path = check_file(path)
    size = os.path.getsize(path)
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {os.path.basename(path)}",
               disable=size < _PROGRESS_BYTES, leave=False)
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            bar.update(len(raw))
            if line_number == 1 and skip_header:
                continue
            try:
                line = decode_line(raw, encoding).rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise DataFormatError(path, line_number, "<line>",
                                      f"not valid {encoding.upper()} (byte 0x{raw[error.start]:02x} at column "
                                      f"{error.start + 1}); save the file as {encoding.upper()}") from None
            if line_number == 1:
                line = line.removeprefix(BOM)
            if not line.strip():
                continue
            if quoted:
                fields = next(csv.reader(io.StringIO(line), delimiter=sep))
            else:
                fields = line.split(sep)
            yield line_number, fields
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
