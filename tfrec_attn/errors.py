"""The project's error base class: the bottom of the package (it imports nothing of ours).

Every error type whose message is the whole story — a bad config value, a malformed data
line, an export that is not what a command needs — derives from :class:`TfrecAttnError`
(and from the builtin type callers would catch, e.g. ``ValueError``). The command line
prints any of them as one ``error: ...`` line and exits with 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class TfrecAttnError(Exception):
    """An error whose message names what is wrong and where (file:line:field, the request
    field, the path); printed without a traceback by the command line."""
