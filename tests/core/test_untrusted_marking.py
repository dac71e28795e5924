"""The untrusted-data marking: no text inside it can close it early or open one of its own.

Generated texts mix free text with spellings of the tag a reader (an LLM)
would still read as the tag: any case, spaces or ``_`` for the hyphen,
full-width and other compatibility forms, zero-width and other invisible
characters inside, combining marks.
"""

from __future__ import annotations

import re
import unicodedata

from hypothesis import example, given
from hypothesis import strategies as st

from circleback.core.rendering import defuse_markers, fold_for_markers, wrap_untrusted

OPENING = '<untrusted-data source="checked system">'
CLOSING = "</untrusted-data>"
#: A tag as a reader sees it, in text folded by fold_for_markers.
TAG = re.compile(r"<[\W_]{0,8}untrusted[\W_]{0,8}data")

_INVISIBLE = st.sampled_from(["", "\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f",
                              "\u180e", "\U000e0041", "\u0301"])
_LESS_THAN = st.sampled_from(["<", "\uff1c", "\ufe64", "<\u0338"])
_SEPARATOR = st.sampled_from(["-", "_", " ", "\uff0d", "", "\u2212", "\t", "\u3000", " - "])


@st.composite
def _cased(draw: st.DrawFn, word: str) -> str:
    letters = []
    for letter in word:
        form = draw(st.sampled_from([letter, letter.upper(), chr(ord(letter) - 97 + 0xFF41)]))
        letters.append(form + draw(_INVISIBLE))
    return "".join(letters)


@st.composite
def forged_tags(draw: st.DrawFn) -> str:
    return "".join([
        draw(_LESS_THAN), draw(_INVISIBLE), draw(st.sampled_from(["", "/", " /", "/ ", "//"])),
        draw(_INVISIBLE), draw(_cased("untrusted")), draw(_SEPARATOR), draw(_cased("data")),
        draw(st.sampled_from([">", " >", "\uff1e", ' source="x">', ""])),
    ])


texts = st.lists(st.text(max_size=20) | forged_tags(), max_size=8).map("".join)


def tags_in(text: str) -> list[int]:
    folded, _ = fold_for_markers(text)
    return [match.start() for match in TAG.finditer(folded)]


@given(text=texts)
@example(text="<<</untrusted-data>")
@example(text="</untrusted-data")
@example(text="x<")
def test_no_tag_survives_inside_the_marking(text: str) -> None:
    wrapped = wrap_untrusted(text)
    assert wrapped.startswith(OPENING) and wrapped.endswith(CLOSING)
    inner = wrapped[len(OPENING):-len(CLOSING)]
    assert inner == defuse_markers(text)
    assert tags_in(inner) == []
    # The wrapper's own two tags are the only ones a reader finds in the whole.
    assert len(tags_in(wrapped)) == 2


@given(text=texts)
def test_only_the_less_than_signs_of_tags_change(text: str) -> None:
    defused = defuse_markers(text)
    assert len(defused) == len(text)
    for before, after in zip(text, defused, strict=True):
        if before != after:
            assert after == "\u2039"
            assert "<" in unicodedata.normalize("NFKD", before)
    assert defuse_markers(defused) == defused


def _no_less_than(text: str) -> bool:
    return all("<" not in unicodedata.normalize("NFKD", char) for char in text)


@given(text=st.text().filter(_no_less_than))
def test_text_without_a_less_than_sign_is_left_alone(text: str) -> None:
    assert defuse_markers(text) == text
