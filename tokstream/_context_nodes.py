"""Nodes of the context tree: leaves and messages over one growth buffer.

See ``tokstream._context`` for the tree and its theory of operation. This module
holds the storage (:class:`_Tape`: parallel ids / sampled-mask / logprobs
arrays with amortised doubling) and the node types, which are live views into
it. It does no tokenization and no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from ._events import Done, Error
from ._exceptions import TokstreamError
from .chat._base import LEAF_KINDS, LeafKind, Role, Segment

if TYPE_CHECKING:
    from ._context import Context
    from ._tokenizer import Tokenizer

__all__ = ["ContextError", "Leaf", "Message", "ReplyBuilder"]

_T = TypeVar("_T", bound=np.generic)
_INT32_MAX = 2**31 - 1

_NAN = np.float32("nan")
_FORMAT_VERSION = 1

_Held: TypeAlias = tuple[tuple[LeafKind, str, npt.NDArray[np.int32]], ...]
"""A message's closing framing, tokenized but not written yet: ``(kind, text, ids)`` leaves."""


class ContextError(TokstreamError, ValueError):
    """The context tree refused an operation (also a :class:`ValueError`).

    Raised when a reply's IDs differ from the streamed IDs, when a message is
    added while a reply is open, or when saved JSON is invalid.
    """


class _Tape:
    """Three parallel growth buffers: ids, sampled mask, logprobs.

    Positions below ``exported`` are visible through views handed out, so they
    are never overwritten with different values: such a write first copies the
    buffer (``allocations`` counts buffers). Rewriting identical values (a
    discarded reply's framing, begun again) keeps the buffer.
    """

    __slots__ = ("allocations", "exported", "ids", "lp", "mask", "n")

    def __init__(self, capacity: int = 1024) -> None:
        self.ids = np.zeros(capacity, dtype=np.int32)
        self.mask = np.zeros(capacity, dtype=np.bool_)
        self.lp = np.full(capacity, _NAN, dtype=np.float32)
        self.n = 0
        self.exported = 0
        self.allocations = 1

    def _grow(self, extra: int) -> None:
        need = self.n + extra
        cap = len(self.ids)
        if need > cap:
            cap = max(need, 2 * cap)
        ids = np.zeros(cap, dtype=np.int32)
        mask = np.zeros(cap, dtype=np.bool_)
        lp = np.full(cap, _NAN, dtype=np.float32)
        n = self.n
        ids[:n], mask[:n], lp[:n] = self.ids[:n], self.mask[:n], self.lp[:n]
        self.ids, self.mask, self.lp = ids, mask, lp
        self.exported = 0
        self.allocations += 1

    def _rewrites(
        self, ids: npt.NDArray[np.int32], sampled: bool, lp: npt.NDArray[np.float32] | None
    ) -> bool:
        """Whether writing at ``n`` would change an exported value."""
        n = self.n
        k = min(len(ids), self.exported - n)
        if (
            not np.array_equal(self.ids[n : n + k], ids[:k])
            or (self.mask[n : n + k] != sampled).any()
        ):
            return True
        old = self.lp[n : n + k]
        return not (
            np.isnan(old).all() if lp is None else np.array_equal(old, lp[:k], equal_nan=True)
        )

    def append(
        self, ids: npt.NDArray[np.int32], sampled: bool, lp: npt.NDArray[np.float32] | None
    ) -> None:
        k = len(ids)
        n = self.n
        if n + k > len(self.ids) or (n < self.exported and self._rewrites(ids, sampled, lp)):
            self._grow(k)
        self.ids[n : n + k] = ids
        self.mask[n : n + k] = sampled
        self.lp[n : n + k] = _NAN if lp is None else lp
        self.n = n + k

    def append_one(self, token_id: int, lp: float | None) -> None:
        n = self.n
        if n >= len(self.ids) or (
            n < self.exported
            and self._rewrites(
                np.array([token_id], dtype=np.int32),
                True,
                None if lp is None else np.array([lp], dtype=np.float32),
            )
        ):
            self._grow(1)
        self.ids[n] = token_id
        self.mask[n] = True
        self.lp[n] = _NAN if lp is None else lp
        self.n = n + 1

    def view(self, arr: npt.NDArray[_T], start: int, end: int) -> npt.NDArray[_T]:
        if end > self.exported:
            self.exported = end
        v = arr[start:end]
        v.flags.writeable = False
        return v


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


def _as_ids(ids: int | npt.ArrayLike) -> npt.NDArray[np.int32]:
    if type(ids) is np.ndarray and ids.dtype == np.int32 and ids.ndim == 1:
        if not ids.size or (ids[0] >= 0 if ids.size == 1 else ids.min() >= 0):
            return ids
        arr: npt.NDArray[Any] = ids
    else:
        arr = np.atleast_1d(np.asarray(ids))
        if arr.ndim == 1 and (
            not arr.size or (arr.dtype.kind in "iu" and arr.min() >= 0 and arr.max() <= _INT32_MAX)
        ):
            return arr.astype(np.int32, copy=False)
    raise ContextError(f"token IDs must be integers in [0, 2**31) in a 1-D sequence, got {arr!r}")


def _as_lp(lp: float | npt.ArrayLike | None, n: int) -> npt.NDArray[np.float32] | None:
    if lp is None:
        return None
    if type(lp) is np.ndarray and lp.dtype == np.float32 and lp.shape == (n,):
        return lp
    arr = np.atleast_1d(np.asarray(lp, dtype=np.float32))
    if arr.shape != (n,):
        raise ContextError(f"logprobs must have one value per ID ({n}), got shape {arr.shape}")
    return arr


class ReplyBuilder:
    """Handle to grow an open assistant reply, leaf by leaf, while it streams.

    Get one from :meth:`Context.begin_assistant`. The sampled leaves are added
    at the end of the context in order, so their IDs, concatenated, are the
    reply's sampled IDs; :meth:`finish` checks them against the stream.
    """

    __slots__ = ("_begin", "_ctx", "_end", "_first", "_held", "_last", "_open", "message")

    def __init__(self, ctx: Context, message: Message, begin: int, held: _Held) -> None:
        self._ctx = ctx
        self.message = message
        self._begin = begin
        self._held = held
        self._first: int | None = None
        self._end = 0
        self._last: Leaf | None = None
        self._open = True

    @property
    def is_open(self) -> bool:
        """Whether the reply still accepts tokens (not finished or discarded)."""
        return self._open

    def _check_open(self) -> None:
        if not self._open:
            raise ContextError("this reply is closed; begin a new one with begin_assistant()")

    def add_prompt(self, text: str, kind: LeafKind = "text") -> Leaf:
        """Add non-sampled text to the reply before sampling starts (a prefill).

        Raises:
            ContextError: Sampled tokens were already added, or the reply is closed.
        """
        self._check_open()
        if self._first is not None:
            raise ContextError("add_prompt() must come before the first sampled leaf")
        return self._ctx._append_segments(self.message, (Segment(kind, text),))[-1]

    def add_leaf(
        self,
        kind: LeafKind,
        ids: int | npt.ArrayLike,
        text: str | None = None,
        logprobs: float | npt.ArrayLike | None = None,
    ) -> Leaf:
        """Start a new sampled leaf with the given IDs (possibly none yet).

        Args:
            kind: The leaf kind (``"thinking"``, ``"text"``, ``"tool_call"``, ...).
            ids: The first token ID(s), exactly as streamed.
            text: Their text; ``None`` means "decode the leaf's IDs when asked".
            logprobs: One logprob per ID, or ``None``.

        Returns:
            The new leaf (the reply's last leaf from now on).

        Raises:
            ContextError: Bad kind, IDs or logprobs, or the reply is closed.
        """
        self._check_open()
        if kind not in LEAF_KINDS:
            raise ContextError(f"unknown leaf kind {kind!r}; expected one of {sorted(LEAF_KINDS)}")
        tape = self._ctx._tape
        start = tape.n
        if isinstance(ids, int) and (logprobs is None or isinstance(logprobs, float)):
            if ids < 0:
                raise ContextError(f"token IDs must be non-negative, got {ids}")
            tape.append_one(ids, logprobs)
            has_lp = logprobs is not None
        else:
            arr = _as_ids(ids)
            lp = _as_lp(logprobs, len(arr))
            tape.append(arr, True, lp)
            has_lp = lp is not None
        if self._first is None:
            self._first = start
        leaf = Leaf(tape, self._ctx._tok, kind, True, start, tape.n, text, has_lp)
        self.message._leaves.append(leaf)
        self._last = leaf
        return leaf

    def extend_leaf(
        self,
        ids: int | npt.ArrayLike,
        text: str | None = None,
        logprobs: float | npt.ArrayLike | None = None,
    ) -> Leaf:
        """Append sampled IDs to the last leaf (one ``int`` is the fast path).

        Args:
            ids: Token ID(s), exactly as streamed.
            text: Their text (e.g. an incremental detokenizer's delta), or
                ``None`` to derive it from IDs.
            logprobs: One logprob per ID (a ``float`` for a single ID), or ``None``.

        Returns:
            The extended leaf.

        Raises:
            ContextError: No sampled leaf yet, bad input, or the reply is closed.
        """
        leaf = self._last
        if leaf is None or not self._open:
            self._check_open()
            raise ContextError("extend_leaf() needs a sampled leaf; call add_leaf() first")
        tape = self._ctx._tape
        if isinstance(ids, int) and not isinstance(logprobs, (list, tuple, np.ndarray)):
            if ids < 0:
                raise ContextError(f"token IDs must be non-negative, got {ids}")
            if leaf._pieces is not None or text is not None:
                self._add_text(leaf, text, ids)
            tape.append_one(ids, logprobs)  # type: ignore[arg-type]
            if logprobs is not None:
                leaf._has_lp = True
            leaf._end += 1
            return leaf
        arr = _as_ids(ids)
        lp = _as_lp(logprobs, len(arr))
        if leaf._pieces is not None or text is not None:
            self._add_text(leaf, text, arr)
        tape.append(arr, True, lp)
        leaf._has_lp = leaf._has_lp or lp is not None
        leaf._end = tape.n
        return leaf

    def _add_text(self, leaf: Leaf, text: str | None, ids: int | npt.NDArray[np.int32]) -> None:
        if leaf._pieces is None:
            leaf._pieces = [leaf.text]
        if text is None:
            text = self._ctx._tok.decode([ids] if isinstance(ids, int) else ids)
        leaf._pieces.append(text)

    @property
    def sampled_ids(self) -> npt.NDArray[np.int32]:
        """The IDs sampled so far (int32, read-only view)."""
        tape = self._ctx._tape
        end = tape.n if self._open else self._end
        start = end if self._first is None else self._first
        return tape.view(tape.ids, start, end)

    def finish(self, streamed: Done | Error | npt.ArrayLike | None = None) -> Message:
        """Check the reply against the stream and close the turn.

        Args:
            streamed: The stream's ``Done`` (or ``Error``) event, or its token
                IDs. When given, the reply's sampled IDs must equal its
                ``token_ids`` exactly. ``None`` skips the check.

        Returns:
            The closed assistant message, with the format's closing framing
            (for Qwen: ``\\n`` after a sampled ``<|im_end|>``, else
            ``<|im_end|>\\n``).

        Raises:
            ContextError: The IDs differ (the message names the first
                difference), or the reply is already closed. On a mismatch the
                reply stays open, so it can be discarded.
        """
        self._check_open()
        sampled = self.sampled_ids
        if streamed is not None:
            want = _as_ids(streamed.token_ids if isinstance(streamed, Done | Error) else streamed)
            if not np.array_equal(sampled, want):
                k = min(len(sampled), len(want))
                diff = np.flatnonzero(sampled[:k] != want[:k])
                at = int(diff[0]) if diff.size else k
                raise ContextError(
                    f"reply IDs differ from the streamed IDs at position {at}: the reply "
                    f"has {len(sampled)} sampled IDs {sampled[at : at + 5].tolist()}..., the "
                    f"stream has {len(want)} {want[at : at + 5].tolist()}...; every streamed "
                    "ID must be added to a leaf exactly once, in order"
                )
        last = int(sampled[-1]) if len(sampled) else None
        ctx = self._ctx
        self._end = ctx._tape.n
        ctx._append_segments(self.message, ctx._format.close_reply(last).segments)
        self._open = False
        ctx._reply = None
        return self.message

    def discard(self) -> None:
        """Remove the open reply (its prompt framing included) from the context.

        The context is left as it was before :meth:`Context.begin_assistant`.
        """
        self._check_open()
        ctx = self._ctx
        if ctx._messages and ctx._messages[-1] is self.message:
            ctx._messages.pop()
        if self._held:
            leaves = ctx._messages[-1]._leaves
            del leaves[len(leaves) - len(self._held) :]
            ctx._close = self._held
        ctx._tape.n = self._begin
        self._open = False
        ctx._reply = None
