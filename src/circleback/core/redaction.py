"""Secrets in a job's settings are kept for its checks and never shown back.

A ``poll_url`` job may carry ``Authorization: Bearer …`` in its headers, a
password in its URL or an API key in its query; a ``poll_module`` job may pass a
token in its args. The job keeps them, but every view of a job — the tools'
answers to the LLM, the CLI, the logs, an error message — shows
:data:`REDACTED` in their place. One rule, here, for all of them:

- a value under a key that names a secret (``Authorization``, ``Cookie``,
  ``Proxy-Authorization``, ``X-Api-Key``, or any name containing ``token``,
  ``secret``, ``key``, ``password`` or ``auth``, in any case);
- in an http(s) URL, the password of its user info and the value of every
  query parameter whose name names a secret.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["REDACTED", "is_secret_name", "redact", "redact_url"]

#: What a view shows instead of a secret.
REDACTED: Final = "[redacted]"

_SECRET_NAMES: Final = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key",
                                  "set-cookie"})
_SECRET_WORDS: Final = re.compile(r"token|secret|key|passw|auth|credential|session",
                                  re.IGNORECASE)
_URL: Final = re.compile(r"https?://[^\s\"'<>]+", re.IGNORECASE)


def is_secret_name(name: object) -> bool:
    """Whether a header, argument or query parameter called ``name`` holds a secret."""
    text = str(name)
    return text.lower() in _SECRET_NAMES or bool(_SECRET_WORDS.search(text))


def redact(value: Any) -> Any:
    """``value`` (JSON data) with every secret replaced by :data:`REDACTED`; a new object."""
    if isinstance(value, Mapping):
        return {key: REDACTED if is_secret_name(key) and item is not None else redact(item)
                for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return redact_url(value)
    return value


def redact_url(text: str) -> str:
    """``text`` with the password and the secret query values of every http(s) URL in it hidden."""
    if "://" not in text:
        return text
    return _URL.sub(lambda match: _redact_one_url(match.group(0)), text)


def _redact_one_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{host}"
    query = parts.query
    if query:
        pieces = []
        for piece in query.split("&"):
            name, equals, _ = piece.partition("=")
            secret = is_secret_name(urllib.parse.unquote_plus(name))
            pieces.append(f"{name}={REDACTED}" if equals and secret else piece)
        query = "&".join(pieces)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
