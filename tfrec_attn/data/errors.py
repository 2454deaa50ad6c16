"""Errors raised while reading interaction data."""

from __future__ import annotations

from tfrec_attn.errors import TfrecAttnError


class DataFormatError(TfrecAttnError, ValueError):
    """A malformed record in an input file.

    The message always reads ``FILE:LINE: field 'NAME': PROBLEM (got VALUE)`` so
    the user can open the file at the right line.
    """

    def __init__(self, path: str, line: int, field: str, problem: str, value: object = None):
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        self.value = value
        got = "" if value is None else f" (got {value!r})"
        super().__init__(f"{self.path}:{line}: field '{field}': {problem}{got}")


class DataFileError(TfrecAttnError, ValueError):
    """A whole input file is unusable (a directory, empty, no rows after its header).

    The message reads ``FILE: PROBLEM``.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DataNotFoundError(TfrecAttnError, FileNotFoundError):
    """The data set is not on disk and could not be downloaded."""


class ChecksumError(TfrecAttnError, IOError):
    """A downloaded archive does not match its pinned checksum."""
