"""The config's error type."""

from __future__ import annotations

from tfrec_attn.errors import TfrecAttnError


class ConfigError(TfrecAttnError, ValueError):
    """A configuration value is unknown, of the wrong type, or out of range. The message
    names where it came from: ``file:line: path=value problem`` or ``--set path=value: ...``."""
