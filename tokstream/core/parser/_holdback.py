"""The hold-back text scanner: tags spelled by several ordinary tokens.

A constrained decoder may write ``<tool_call>`` as ``"<" "tool" "_call" ">"``.
:class:`HoldBackScanner` is the part of :class:`~tokstream.ResponseParser` that
finds such tags in the text. It only ever sees the slow path: a piece that
contains ``<``, a piece that arrives while text is held back, or a tag ID where
that tag means nothing.

Theory of operation. The held text and the scanned piece form one string. It
is scanned for ``<``:

* a complete tag valid in the current state is handed to the parser's
  ``_transition`` with the tokens before it and the tokens that carry it;
* a proper prefix of such a tag (``"<tool"``) at the end of the string is
  *held back*, with the tokens that carry it: neither emitted as a delta nor
  assigned to a segment, until the next pieces prove it a tag or plain text;
* anything else is text of the current state.

So held text is never emitted and then retracted. Each pending token keeps the
offset of its piece in the scanned string, which is how a token that carries
characters of a tag is given to that tag's segment (see ``_core``).

Not here: tags by ID (a dict lookup in ``_core``), segment kinds and state
changes (``_core._transition``), and tool-call bodies (``_hermes``,
``_qwen3_coder``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias

from ._segments import OpenSegment

__all__ = ["HoldBackScanner", "Pending"]

Pending: TypeAlias = tuple[int, float | None, str, int]
"""A token not yet given to a segment: (id, logprob, piece, offset of the piece
in the scanned string)."""


class HoldBackScanner:
    """Text-tag matching with hold-back; a base of ``ResponseParser``.

    Attributes (set by the parser):
        _hold: Text held back because it could still become a tag.
        _hold_toks: The tokens that carry it (and any empty-text tokens since).
        _text_tags: State -> ``(tag text, code)`` pairs matched in text.
        _prefixes: State -> proper prefixes of those tags.
    """

    __slots__ = ("_hold", "_hold_toks", "_prefixes", "_text_tags")

    _hold: str
    _hold_toks: list[Pending]
    _text_tags: dict[int, tuple[tuple[str, int], ...]]
    _prefixes: dict[int, frozenset[str]]
    # The parser's state, open segment and pending delta text.
    _state: int
    _cur: OpenSegment
    _delta: list[str]

    if TYPE_CHECKING:

        def _transition(
            self, code: int, before: list[Pending], tag_toks: list[Pending], index: int
        ) -> None: ...

    def _scan(self, tid: int, lp: float | None, piece: str, index: int) -> None:
        hold = self._hold
        s = hold + piece
        toks = self._hold_toks
        toks.append((tid, lp, piece, len(hold)))
        pos = scan = 0
        while True:
            i = s.find("<", scan)
            if i < 0:
                self._emit(s[pos:])
                self._assign(toks)
                self._hold, self._hold_toks = "", []
                return
            found = self._match(s, i)
            if found is None:
                if s[i:] in self._prefixes[self._state]:
                    self._emit(s[pos:i])
                    before = [t for t in toks if t[3] + len(t[2]) <= i]
                    self._assign(before)
                    self._hold = s[i:]
                    self._hold_toks = [(t[0], t[1], t[2], t[3] - i) for t in toks[len(before) :]]
                    return
                scan = i + 1
                continue
            tag, code = found
            self._emit(s[pos:i])
            before = [t for t in toks if t[3] + len(t[2]) <= i]
            self._transition(code, before, toks[len(before) :], index)
            toks = []
            pos = scan = i + len(tag)

    def _match(self, s: str, i: int) -> tuple[str, int] | None:
        for tag, code in self._text_tags[self._state]:
            if s.startswith(tag, i):
                return tag, code
        return None

    def _release_hold(self) -> None:
        """Give up on the held text: it is text of the current state."""
        if self._hold or self._hold_toks:
            self._emit(self._hold)
            self._assign(self._hold_toks)
            self._hold, self._hold_toks = "", []

    def _emit(self, text: str) -> None:
        if text:
            self._delta.append(text)

    def _assign(self, toks: Iterable[Pending]) -> None:
        cur = self._cur
        for tid, lp, piece, _ in toks:
            cur.ids.append(tid)
            cur.lps.append(lp)
            cur.pieces.append(piece)
