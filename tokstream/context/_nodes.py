"""Nodes of the context tree: leaves and messages, live views over the tape.

See ``tokstream.context._context`` for the tree and its theory of operation.
A :class:`Leaf` is a ``[start, end)`` span of the context's
:class:`~tokstream.context._tape._Tape`; a :class:`Message` is a role and its
leaves. No tokenization beyond decoding a leaf's IDs on demand, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..chat._base import LeafKind, Role
from ._tape import _Tape

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer

__all__ = ["Leaf", "Message"]


class Leaf:
    """One run of tokens of one kind: its text, IDs and (if sampled) logprobs.

    Leaves are live views into their context; they change only while they are
    the last leaf of an open reply.
    """

    __slots__ = ("_end", "_has_lp", "_pieces", "_start", "_tape", "_tok", "kind", "sampled")

    def __init__(
        self,
        tape: _Tape,
        tok: Tokenizer,
        kind: LeafKind,
        sampled: bool,
        start: int,
        end: int,
        text: str | None,
        has_lp: bool,
    ) -> None:
        self._tape = tape
        self._tok = tok
        self.kind: LeafKind = kind
        self.sampled = sampled
        self._start = start
        self._end = end
        self._pieces: list[str] | None = None if text is None else [text]
        self._has_lp = has_lp

    @property
    def ids(self) -> npt.NDArray[np.int32]:
        """The leaf's token IDs (int32, read-only view)."""
        return self._tape.view(self._tape.ids, self._start, self._end)

    @property
    def logprobs(self) -> npt.NDArray[np.float32] | None:
        """Per-token logprobs (float32, NaN where unknown), or ``None`` if none known."""
        if not self._has_lp:
            return None
        return self._tape.view(self._tape.lp, self._start, self._end)

    @property
    def text(self) -> str:
        """The leaf's text: as given when it was added, else the decode of its IDs."""
        if self._pieces is None:
            return self._tok.decode(self._tape.ids[self._start : self._end])
        if len(self._pieces) > 1:
            self._pieces[:] = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    @property
    def span(self) -> tuple[int, int]:
        """``(start, end)``: the leaf's position in :meth:`Context.prompt_ids`."""
        return self._start, self._end

    def __len__(self) -> int:
        return self._end - self._start

    def __repr__(self) -> str:
        flag = ", sampled" if self.sampled else ""
        return f"Leaf({self.kind}{flag}, {self.text!r}, ids[{self._start}:{self._end}])"


class Message:
    """A message node: a role and its leaves, in order.

    Attributes:
        role: ``"system"``, ``"user"``, ``"assistant"`` or ``"tool"``.
        name: The tool name of a tool result, if given.
        content: The text the message was added with (``None`` for replies).
    """

    __slots__ = ("_leaves", "_tape", "content", "name", "role")

    def __init__(
        self, role: Role, tape: _Tape, name: str | None = None, content: str | None = None
    ) -> None:
        self.role: Role = role
        self.name = name
        self.content = content
        self._tape = tape
        self._leaves: list[Leaf] = []

    @property
    def leaves(self) -> tuple[Leaf, ...]:
        """The leaves, in order."""
        return tuple(self._leaves)

    @property
    def span(self) -> tuple[int, int]:
        """``(start, end)``: the message's position in :meth:`Context.prompt_ids`."""
        if not self._leaves:
            return (0, 0)
        return self._leaves[0]._start, self._leaves[-1]._end

    @property
    def ids(self) -> npt.NDArray[np.int32]:
        """All of the message's IDs (int32, read-only view)."""
        start, end = self.span
        return self._tape.view(self._tape.ids, start, end)

    @property
    def sampled_ids(self) -> npt.NDArray[np.int32]:
        """The IDs of the message's sampled leaves, concatenated (int32)."""
        parts = [leaf.ids for leaf in self._leaves if leaf.sampled]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    @property
    def text(self) -> str:
        """The concatenation of the leaves' text."""
        return "".join(leaf.text for leaf in self._leaves)

    def __repr__(self) -> str:
        return f"Message({self.role}, {len(self._leaves)} leaves, {self.text!r})"
