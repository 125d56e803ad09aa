"""Checks a posted document and compresses it, refusing documents too large to keep.

Documents are stored as the exact text that was posted (a zlib stream of it), so a state reads
back byte for byte; parsing only proves the text is JSON.
"""

from __future__ import annotations

import json
import zlib

from opencave.errors import BadRequest, PayloadTooLarge

# The limit upstream CAVE applies to the compressed document.
MAX_COMPRESSED_BYTES = 50 * 1024 * 1024
_CHUNK = 1024 * 1024


def check_json(text: bytes, what: str = "state") -> None:
    """Raise ``BadRequest`` unless ``text`` is a JSON document (UTF-8, -16 or -32)."""
    if not text.strip():
        raise BadRequest(
            f"The request body is empty; send the {what} as JSON text in the body.", code="invalid_json"
        )
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise BadRequest(
            f"The request body is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            f"send the {what} as JSON text.",
            code="invalid_json",
        ) from None
    except UnicodeDecodeError:
        raise BadRequest(
            f"The request body is not UTF-8 text; send the {what} as UTF-8 encoded JSON.", code="invalid_json"
        ) from None
    except RecursionError:
        raise BadRequest(
            f"The JSON {what} is nested too deeply to be read; flatten it.", code="invalid_json"
        ) from None


def compress_limited(text: bytes, limit: int = MAX_COMPRESSED_BYTES, what: str = "state") -> bytes:
    """The zlib stream of ``text``; ``PayloadTooLarge`` as soon as it grows past ``limit`` bytes.

    Compressing in pieces stops early on a hopeless document instead of compressing all of it.
    """
    compressor = zlib.compressobj()
    parts: list[bytes] = []
    size = 0
    view = memoryview(text)
    for start in range(0, len(view), _CHUNK):
        part = compressor.compress(view[start : start + _CHUNK])
        size += len(part)
        parts.append(part)
        if size > limit:
            break
    else:
        part = compressor.flush()
        size += len(part)
        parts.append(part)
    if size > limit:
        raise PayloadTooLarge(
            f"The {what} takes more than {limit:,} bytes after zlib compression (the limit); "
            f"store less in it, e.g. fewer segments or annotations per layer.",
            code="document_too_large",
        )
    return b"".join(parts)
