"""Turning a message template and a check result into the text a user (or an LLM) reads.

Templates come from an LLM that anyone may have prompted, and results come from
systems we do not control. So substitution is literal: exactly the placeholders
``{result}``, ``{job_id}`` and ``{workflow_id}`` are replaced, in one pass, and
every other brace text stays as it is. ``str.format`` never sees a user's string.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

__all__ = [
    "DEFAULT_RESULT_LIMIT",
    "render_message",
    "render_result",
    "wrap_untrusted",
]

#: How many characters of a rendered result a message may carry.
DEFAULT_RESULT_LIMIT = 2000

_PLACEHOLDER = re.compile(r"\{(result|job_id|workflow_id)\}")
_UNTRUSTED_OPEN = "<untrusted-data source=\"checked system\">"
_UNTRUSTED_CLOSE = "</untrusted-data>"
_KEEP_CONTROLS = frozenset("\n\t")


def _strip_controls(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(
        ch for ch in text if ch in _KEEP_CONTROLS or unicodedata.category(ch) not in ("Cc", "Cs")
    )


def _opaque(value: object) -> str:
    return f"<{type(value).__name__}>"


def render_result(result: Any, *, limit: int = DEFAULT_RESULT_LIMIT) -> str:
    """Render a check result as compact text: strings as they are, anything else as JSON.

    Control characters (but newline and tab) are removed and the text is cut to
    ``limit`` characters, ending with a marker that says it was cut.
    """
    if result is None:
        text = ""
    elif isinstance(result, str):
        text = result
    else:
        try:
            text = json.dumps(result, separators=(",", ":"), ensure_ascii=False, default=_opaque)
        except (TypeError, ValueError, RecursionError):
            text = f"<unrenderable {type(result).__name__}>"
    total = len(text)
    # Only a bounded head is cleaned, so a huge result costs no more than the limit.
    head = _strip_controls(text[: 2 * limit])
    if total <= 2 * limit and len(head) <= limit:
        return head
    marker = f"…[cut: {total} characters in all]"
    return head[: max(0, limit - len(marker))] + marker


def wrap_untrusted(text: str) -> str:
    """Mark ``text`` as data from a checked system so an LLM does not take it as instructions."""
    inner = text.replace(_UNTRUSTED_CLOSE, "</untrusted_data>")
    return f"{_UNTRUSTED_OPEN}{inner}{_UNTRUSTED_CLOSE}"


def render_message(
    template: str,
    *,
    result: Any,
    job_id: str,
    workflow_id: str | None,
    untrusted: bool = False,
    result_limit: int = DEFAULT_RESULT_LIMIT,
) -> str:
    """Fill the placeholders of ``template``; with ``untrusted`` the result is wrapped as data."""
    rendered_result = render_result(result, limit=result_limit)
    if untrusted:
        rendered_result = wrap_untrusted(rendered_result)
    values = {"result": rendered_result, "job_id": job_id, "workflow_id": workflow_id or ""}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)
