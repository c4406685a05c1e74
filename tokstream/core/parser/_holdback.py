"""The hold-back scanner: tags spelled by several ordinary tokens.

A constrained decoder may write ``<tool_call>`` as ``"<" "tool" "_call" ">"``.
:class:`HoldBackScanner` finds such tags in the text. The parser owns one and
hands it only the slow path: a piece that contains the current state's trigger
character (``<`` for most families), a piece that arrives while text is held
back, or a tag ID where that tag means nothing. It knows strings and tokens,
not states or segments: the parser passes the current state's tags and trigger
on each call and acts on what comes back.

Theory of operation. The held text and the pushed piece form one string,
scanned for the trigger character. Each :meth:`HoldBackScanner.next` call
returns the text before the next finding, the tokens whose pieces end there,
and the finding:

* a complete tag of the current state: returned with the tokens that carry it
  (the parser changes state, then calls :meth:`~HoldBackScanner.next` again
  with the new state's tags, to scan the rest of the string);
* a proper prefix of such a tag (``"<tool"``) at the end of the string: it is
  *held back*, with the tokens that carry it: neither emitted as text nor
  assigned to a segment, until later pieces prove it a tag or plain text;
* the end of the string: everything left is text.

So held text is never emitted and then retracted. Each pending token keeps the
offset of its piece in the scanned string, which is how a token that carries
characters of a tag is given to that tag's segment (``_core`` states the rule).
"""

from __future__ import annotations

from typing import TypeAlias

from ._segments import Item, item_ids

__all__ = ["Found", "HoldBackScanner", "Pending"]

Pending: TypeAlias = tuple[Item, str, int]
"""A token not yet given to a segment: (the token as received, its piece, the
offset of the piece in the scanned string)."""

Found: TypeAlias = tuple[int, list[Pending]] | None
"""A tag found by :meth:`HoldBackScanner.next`: (tag code, the tokens that carry
it), or ``None``."""


class HoldBackScanner:
    """Matches tags in text, holding back what could still become one.

    Attributes:
        held: Text held back because it could still become a tag (``""`` if
            none). The parser's fast path checks it.
        last_start: The offset, in the scanned string, of the text the last
            :meth:`next` call returned.
    """

    __slots__ = ("_pos", "_s", "_scan", "_toks", "held", "last_start")

    def __init__(self) -> None:
        self.held = ""
        self.last_start = 0
        self._toks: list[Pending] = []
        self._s = ""
        self._pos = 0
        self._scan = 0

    @property
    def pending(self) -> int:
        """How many tokens are held (not yet given back)."""
        return len(self._toks)

    @property
    def held_ids(self) -> list[int]:
        """The IDs of the held tokens."""
        return item_ids([t[0] for t in self._toks])

    def push(self, item: Item, piece: str) -> None:
        """Start scanning the held text followed by ``piece`` (of token ``item``)."""
        held = self.held
        self._toks.append((item, piece, len(held)))
        self._s = held + piece
        self.held = ""
        self._pos = self._scan = 0

    def next(
        self, tags: tuple[tuple[str, int], ...], prefixes: frozenset[str], trigger: str
    ) -> tuple[str, list[Pending], Found]:
        """Scan on to the next tag among ``tags``, or to the end of the string.

        ``tags`` all start with ``trigger``; ``prefixes`` are their proper
        prefixes.

        Returns:
            ``(text, tokens, found)``: the text before the finding, the tokens
            whose pieces end there, and the tag found (``None`` at the end of
            the string, which may have left text held back).
        """
        s, toks, pos, scan = self._s, self._toks, self._pos, self._scan
        self.last_start = pos
        while True:
            i = s.find(trigger, scan)
            if i < 0:
                self._toks = []
                return s[pos:], toks, None
            for tag, code in tags:
                if s.startswith(tag, i):
                    n = _ending_by(toks, i)
                    self._toks = []
                    self._pos = self._scan = i + len(tag)
                    return s[pos:i], toks[:n], (code, toks[n:])
            if s[i:] in prefixes:
                n = _ending_by(toks, i)
                self.held = s[i:]
                self._toks = [(t[0], t[1], t[2] - i) for t in toks[n:]]
                return s[pos:i], toks[:n], None
            scan = i + 1

    def resume(self, at: int, toks: list[Pending]) -> None:
        """Scan on from offset ``at`` of the current string, with ``toks`` pending.

        For a state change that the last text returned by :meth:`next` caused
        part way (a JSON call that balanced, text that left a section): the
        text from ``at`` is scanned again, in the new state.
        """
        self._pos = self._scan = at
        self._toks = toks

    def release(self) -> tuple[str, list[Pending]]:
        """Give up on the held text: return it and its tokens, as plain text."""
        held, toks = self.held, self._toks
        self.held, self._toks = "", []
        return held, toks


def _ending_by(toks: list[Pending], i: int) -> int:
    """How many of ``toks`` (in order) have pieces that end at or before ``i``."""
    n = 0
    for t in toks:
        if t[2] + len(t[1]) > i:
            break
        n += 1
    return n
