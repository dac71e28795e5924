"""Turning a message template and a check result into the text a user (or an LLM) reads.

Templates come from an LLM that anyone may have prompted, and results come from
systems we do not control. So substitution is literal: exactly the placeholders
``{result}``, ``{job_id}`` and ``{workflow_id}`` are replaced, in one pass, and
every other brace text stays as it is. ``str.format`` never sees a user's string.

Sizes are bounded twice: the rendered result is cut to its limit, and the whole
message to the template's length plus one result's worth (plus a little for
ids and the untrusted-data markers), so a template that repeats ``{result}``
cannot multiply a large result.
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
#: An untrusted-data tag, opening or closing, in text folded by :func:`fold_for_markers`.
_MARKER = re.compile(r"<[\W_]{0,8}untrusted[\W_]{0,8}data")
#: Marks and format characters: a reader does not see them between letters.
_INVISIBLE_CATEGORIES = frozenset({"Mn", "Me", "Cf"})
#: Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt).
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
    (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_KEEP_CONTROLS = frozenset("\n\t")
#: Room beyond the template and one result for ids and the untrusted-data markers.
MESSAGE_SLACK_CHARS = 256


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
    window = 2 * limit
    complete = True
    if result is None:
        text = ""
    elif isinstance(result, str):
        text = result
    else:
        try:
            text, complete = _json_head(result, window)
        except (TypeError, ValueError, RecursionError):
            text = f"<unrenderable {type(result).__name__}>"
    total = len(text)
    # Only a bounded head is cleaned, so a huge result costs no more than the limit.
    head = _strip_controls(text[:window])
    if complete and total <= window and len(head) <= limit:
        return head
    if complete:
        marker = f"…[cut: {total} characters in all]"
    else:
        marker = f"…[cut: more than {window} characters]"
    return head[: max(0, limit - len(marker))] + marker


def _json_head(result: Any, max_chars: int) -> tuple[str, bool]:
    """Compact JSON of ``result``, or of its head when it would run past ``max_chars``.

    Returns the text and whether it is complete. A large result is first pruned
    to a copy holding about ``max_chars`` characters of its beginning, so a
    result of a million items costs about as much as one that fills the limit,
    and the text up to ``max_chars`` is the same as the full JSON's.
    """
    budget = _Budget(max_chars)
    pruned = budget.prune(result)
    text = json.dumps(pruned, separators=(",", ":"), ensure_ascii=False, default=_opaque)
    return text, not budget.exhausted


class _Budget:
    """Copies the beginning of a JSON-like value until about ``chars`` characters are used.

    Every count is a lower bound of what the value takes in compact JSON, so the
    pruned copy's text agrees with the full text for at least ``chars`` characters.
    """

    def __init__(self, chars: int) -> None:
        self.left = chars
        self.exhausted = False

    def prune(self, value: Any) -> Any:
        if isinstance(value, str):
            self.left -= len(value) + 2
            if self.left < 0:
                self.exhausted = True
                return value[: len(value) + self.left + 1]
            return value
        if value is None or isinstance(value, bool | int | float):
            if value is None or isinstance(value, bool):
                self.left -= 4
            else:  # the base class's repr: what JSON writes, even for an IntEnum
                self.left -= len(int.__repr__(value) if isinstance(value, int)
                                 else float.__repr__(value))
            return value
        if isinstance(value, dict):
            self.left -= 2
            pruned: dict[Any, Any] = {}
            for key, item in value.items():
                if self.left <= 0:
                    self.exhausted = True
                    break
                self.left -= len(str(key)) + 3
                pruned[key] = self.prune(item)
            return pruned
        if isinstance(value, list | tuple):
            self.left -= 2
            items: list[Any] = []
            for item in value:
                if self.left <= 0:
                    self.exhausted = True
                    break
                self.left -= 1
                items.append(self.prune(item))
            return items
        opaque = _opaque(value)
        self.left -= len(opaque) + 2
        return opaque


def wrap_untrusted(text: str) -> str:
    """Mark ``text`` as data from a checked system so an LLM does not take it as instructions.

    The data cannot close the marking early nor open one of its own: every
    spelling of the tag in it (any case, spaces, ``_`` for ``-``, compatibility
    forms such as the full-width less-than sign, zero-width characters inside) has its
    ``<`` replaced by U+2039 (single left-pointing angle quotation mark).
    """
    return f"{_UNTRUSTED_OPEN}{defuse_markers(text)}{_UNTRUSTED_CLOSE}"


def fold_for_markers(text: str) -> tuple[str, list[int]]:
    """``text`` as a reader sees it, for finding tags, and where each folded character came from.

    Each character is decomposed (NFKD: compatibility forms become plain ones)
    and case-folded; marks, format characters and the other invisible code
    points are dropped.
    """
    folded: list[str] = []
    origins: list[int] = []
    for index, char in enumerate(text):
        for piece in unicodedata.normalize("NFKD", char).casefold():
            if piece.isascii() or not _is_invisible(piece):
                folded.append(piece)
                origins.append(index)
    return "".join(folded), origins


def _is_invisible(char: str) -> bool:
    code = ord(char)
    return unicodedata.category(char) in _INVISIBLE_CATEGORIES or any(
        low <= code <= high for low, high in _DEFAULT_IGNORABLE)


def defuse_markers(text: str) -> str:
    """``text`` with the ``<`` of every spelling of an untrusted-data tag made a U+2039."""
    if text.isascii():  # the common case: nothing to fold, indices stay
        folded, origins = text.lower(), None
    else:
        folded, origins = fold_for_markers(text)
    starts = {
        index if origins is None else origins[index]
        for match in _MARKER.finditer(folded)
        for index in range(match.start(), match.end())
        if folded[index] == "<"
    }
    if not starts:
        return text
    return "".join("\u2039" if index in starts else char for index, char in enumerate(text))


def render_message(
    template: str,
    *,
    result: Any,
    job_id: str,
    workflow_id: str | None,
    untrusted: bool = False,
    result_limit: int = DEFAULT_RESULT_LIMIT,
) -> str:
    """Fill the placeholders of ``template``; with ``untrusted`` the result is wrapped as data.

    Control characters (but newline and tab) are dropped from the template too. The
    message is at most ``len(template) + result_limit + MESSAGE_SLACK_CHARS``
    characters long; a longer one is cut with a marker.
    """
    clean = _strip_controls(template)
    values = {"result": "", "job_id": job_id, "workflow_id": workflow_id or ""}
    if "{result}" in clean:  # rendering a result costs; most templates never show it
        rendered_result = render_result(result, limit=result_limit)
        values["result"] = wrap_untrusted(rendered_result) if untrusted else rendered_result
    limit = len(template) + result_limit + MESSAGE_SLACK_CHARS
    return _substitute(clean, values, limit)


def _substitute(template: str, values: dict[str, str], limit: int) -> str:
    """Replace the placeholders in one pass; past ``limit`` characters, cut with a marker.

    The full length is computed before anything is built, so a template that
    repeats ``{result}`` never builds more than ``limit`` characters.
    """
    matches = list(_PLACEHOLDER.finditer(template))
    total = len(template) + sum(len(values[m.group(1)]) - len(m.group(0)) for m in matches)
    if total <= limit:
        whole: list[str] = []
        position = 0
        for found in matches:
            whole += (template[position : found.start()], values[found.group(1)])
            position = found.end()
        whole.append(template[position:])
        return "".join(whole)
    marker = f"…[cut: {total} characters in all]"
    room = max(0, limit - len(marker))
    pieces: list[str] = []
    size = position = 0
    for match in [*matches, None]:
        literal = template[position : match.start() if match else len(template)]
        for piece in (literal, values[match.group(1)] if match else ""):
            taken = piece[: room - size]
            pieces.append(taken)
            size += len(taken)
            if size >= room:
                return "".join(pieces) + marker
        if match:
            position = match.end()
    return "".join(pieces) + marker
