"""Keeps tokens out of the logs: every record is rewritten before any handler formats it.

Tokens reach log lines mostly through URLs (``?middle_auth_token=…`` in uvicorn's access log) but
also through headers or exception messages, so the filter removes three shapes wherever they
appear: ``middle_auth_token=``/``token=`` parameters and cookies, ``Bearer`` credentials, and any
32-hex-digit string (the token format, also how a token looks when its parameter name was
percent-encoded).
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

REDACTED = "[redacted]"

_PATTERNS = (
    (re.compile(r"(?i)\b((?:middle_auth_)?token|access_token)=[^&\s\"';,]*"), rf"\1={REDACTED}"),
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',]+"), rf"\1 {REDACTED}"),
    (re.compile(r"(?i)(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])"), REDACTED),
)


def redact(text: str) -> str:
    """``text`` with every token-like value replaced by ``[redacted]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_arg(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value  # keeps %d and %f working
    return redact(value if isinstance(value, str) else str(value))


class RedactTokens(logging.Filter):
    """Rewrites a record's message, arguments and traceback text in place; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        else:
            record.msg = redact(str(record.msg))
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def redacted_logging() -> dict[str, Any]:
    """uvicorn's logging configuration with :class:`RedactTokens` on every handler, and the root
    logger (every other library's records) sent through the same filtered handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_tokens": {"()": RedactTokens}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_tokens"]
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    return config
