"""The context's mutable state and the one place messages are tokenized and written.

:class:`_State` is shared by :class:`~tokstream.Context` (the public tree) and
:class:`~tokstream.ReplyBuilder` (a handle that grows one reply): the tokenizer,
the chat format, the tape, the message list and the held closing framing, plus
the operations both need (render segments to leaves, hold and retract closing
framing). See ``tokstream.context._context`` for the theory of operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .._exceptions import ContextError
from ..chat._base import LeafKind, Rendering, Role, Segment
from ._nodes import Leaf, Message
from ._tape import _Held, _Tape

if TYPE_CHECKING:
    from .._tokenizer import Tokenizer
    from ..chat import ChatFormat

__all__ = ["_State"]


class _State:
    """A conversation's storage, messages and tokenization (no public API)."""

    __slots__ = ("close", "format", "messages", "tape", "tok")

    def __init__(self, tokenizer: Tokenizer, chat_format: ChatFormat) -> None:
        self.tok = tokenizer
        self.format = chat_format
        self.tape = _Tape()
        self.messages: list[Message] = []
        self.close: _Held = ()  # the last message's held closing framing

    def preamble(self) -> tuple[Segment, ...]:
        return () if self.messages else self.format.preamble().segments

    def prev(self) -> Role | None:
        return self.messages[-1].role if self.messages else None

    def add(
        self,
        role: Role,
        rendering: Rendering,
        *,
        name: str | None = None,
        content: str | None = None,
    ) -> Message:
        if rendering.retract:
            self.retract(rendering.retract)
        else:
            self.write_close()
        message = Message(role, self.tape, name, content)
        body = [s for s in self.preamble() + rendering.segments if s.text]
        if body and body[0].kind == "framing" and body[0].text == self.sampled_stop():
            # The model ended its reply with this message's opening (GLM's
            # <|observation|>, <|user|>): it is in the context already.
            body = body[1:]
        close = [s for s in rendering.close if s.text]
        held: list[tuple[LeafKind, str, npt.NDArray[np.int32]]] = []
        for first_seg, kind, text, ids in self.encode(body + close, split=rendering.split):
            if first_seg < len(body):
                self.write(message, kind, text, ids)
            else:  # a clean boundary before the close: hold it back
                held.append((kind, text, ids))
        self.close = tuple(held)
        self.messages.append(message)
        return message

    def sampled_stop(self) -> str | None:
        """The text of the sampled stop token that ends the last message, if any."""
        leaves = self.messages[-1]._leaves if self.messages else []
        last = leaves[-1] if leaves else None
        return last.text if last is not None and last.sampled and last.kind == "stop" else None

    def write_close(self) -> None:
        """Write the held closing framing of the last message."""
        if self.close:
            message = self.messages[-1]
            for kind, text, ids in self.close:
                self.write(message, kind, text, ids)
            self.close = ()

    def retract(self, segments: tuple[Segment, ...]) -> None:
        """Drop the last message's closing framing (held, or written: then copy-on-write)."""
        held = "".join(text for _, text, _ in self.close)
        want = "".join(s.text for s in segments)
        if held and held == want and all(s.kind == "framing" for s in segments):
            self.close = ()
            return
        # Written already (a close that shares a token with its message, or a
        # context saved without held framing): take it back from the buffer.
        self.write_close()
        leaves = self.messages[-1]._leaves if self.messages else []
        tail = leaves[len(leaves) - len(segments) :]
        if len(tail) != len(segments) or any(
            leaf.sampled or leaf.kind != "framing" or leaf.text != seg.text
            for leaf, seg in zip(tail, segments, strict=True)
        ):
            raise ContextError(
                f"cannot retract {segments!r}: the previous message does not end with that framing"
            )
        self.tape.n = tail[0]._start
        del leaves[len(leaves) - len(segments) :]

    def append_segments(self, message: Message, segments: Sequence[Segment]) -> list[Leaf]:
        """Tokenize the segments once and write them to ``message`` as leaves."""
        groups = self.encode([s for s in segments if s.text])
        return [self.write(message, kind, text, ids) for _, kind, text, ids in groups]

    def write(
        self, message: Message, kind: LeafKind, text: str, ids: npt.NDArray[np.int32]
    ) -> Leaf:
        tape = self.tape
        start = tape.n
        tape.append(ids, False, None)
        leaf = Leaf(tape, self.tok, kind, False, start, tape.n, text, False)
        message._leaves.append(leaf)
        return leaf

    def encode(
        self, segs: Sequence[Segment], *, split: bool = False
    ) -> list[tuple[int, LeafKind, str, npt.NDArray[np.int32]]]:
        """Encode the segments as one string and split the IDs back at clean boundaries.

        A boundary is clean when no token spans it; otherwise the two segments
        share one leaf (kind: the first non-framing one). Returns ``(index of
        the leaf's first segment, kind, text, ids)`` per leaf. With ``split``,
        each segment is encoded on its own (one leaf each).
        """
        if split:
            return [(k, s.kind, s.text, self.tok.encode(s.text)) for k, s in enumerate(segs)]
        if not segs:
            return []
        full = "".join(s.text for s in segs)
        ids, offsets = self.tok.encode_with_offsets(full)
        out: list[tuple[int, LeafKind, str, npt.NDArray[np.int32]]] = []
        i = first = pos = max_end = first_seg = 0
        kind: LeafKind | None = None
        texts: list[str] = []
        for j, seg in enumerate(segs):
            pos += len(seg.text)
            texts.append(seg.text)
            if kind is None or kind == "framing":
                kind = seg.kind
            while i < len(ids) and offsets[i][0] < pos:
                max_end = max(max_end, offsets[i][1])
                i += 1
            if (max_end <= pos or j == len(segs) - 1) and i > first:
                out.append((first_seg, kind, "".join(texts), ids[first:i]))
                first, kind, texts, first_seg = i, None, [], j + 1
        if first < len(ids):
            raise AssertionError("segment split lost IDs")  # pragma: no cover
        return out
