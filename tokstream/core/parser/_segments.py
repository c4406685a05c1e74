"""The segment under construction: tokens appended one by one, frozen once.

The per-token path appends each token *as received* (an ``int`` ID, or the
``Token`` that carries its ID and logprob) and its text piece to two lists:
appending is the cheapest thing it can do. IDs and logprobs are taken out of
the items, and numpy arrays built, once, when the segment closes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import NamedTuple, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from ..._exceptions import InvalidRequest
from ._events import ReplySegment, SegmentKind

__all__ = ["Item", "OpenSegment", "Scored", "freeze_ids", "id_items", "item_ids"]

_INT32_MAX = 2**31 - 1
_SMALL = 48


class _HasLogprob(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def logprob(self) -> float | None: ...


class Scored(NamedTuple):
    """An ID received with its logprob through ``receive_ids`` (a cheap stand-in
    for a ``Token``)."""

    id: int
    logprob: float | None


Item: TypeAlias = int | _HasLogprob
"""A received token: an ID (``receive_ids`` without logprobs), or an object with
``id`` and ``logprob`` (a ``Token``, or :class:`Scored`)."""


def id_items(
    ids: Iterable[int] | npt.NDArray[np.integer],
    logprobs: Iterable[float | None] | npt.NDArray[np.floating] | None,
) -> tuple[list[int] | list[Scored], bool]:
    """IDs (and logprobs) as loop items: ``(items, by_id)``.

    Without logprobs the items are the IDs themselves (``by_id``); with them,
    :class:`Scored` pairs.

    IDs are checked (0..2**31-1) when their segment is frozen, not here: a
    pass over every ID would cost the per-token path.

    Raises:
        InvalidRequest: ``logprobs`` is not the same length as ``ids``.
    """
    id_list = ids.tolist() if isinstance(ids, np.ndarray) else [int(i) for i in ids]
    if logprobs is None:
        return id_list, True
    lps = logprobs.tolist() if isinstance(logprobs, np.ndarray) else list(logprobs)
    if len(lps) != len(id_list):
        raise InvalidRequest(
            "logprobs", f"{len(lps)} values", f"need one per token ID ({len(id_list)})"
        )
    return list(map(Scored._make, zip(id_list, lps, strict=True))), False


def freeze_ids(ids: list[int]) -> npt.NDArray[np.int32]:
    """Return ``ids`` as a read-only int32 array.

    Raises:
        InvalidRequest: An ID is negative or outside int32 (a caller's
            ``Token``: a stream's IDs are checked as they are decoded).
    """
    try:
        arr = np.array(ids, dtype=np.int32)
    except OverflowError:
        raise _out_of_range(ids) from None
    # A builtin min() is cheaper than numpy's reduction below a few dozen IDs.
    if ids and (min(ids) if len(ids) <= _SMALL else arr.min()) < 0:
        raise _out_of_range(ids)
    arr.flags.writeable = False
    return arr


def _out_of_range(ids: list[int]) -> InvalidRequest:
    i, bad = next((i, v) for i, v in enumerate(ids) if not 0 <= v <= _INT32_MAX)
    return InvalidRequest(f"ids[{i}]", bad, "token IDs must be in 0..2**31-1")


def item_ids(items: list[Item]) -> list[int]:
    """The IDs of ``items``."""
    return [x if type(x) is int else x.id for x in items]  # type: ignore[union-attr]


def _ids_and_logprobs(
    items: list[Item],
) -> tuple[npt.NDArray[np.int32], list[float | None] | None]:
    # A segment's items are all IDs or all Token-like unless a caller mixed
    # receive_ids() and receive_tokens() within it: try the homogeneous forms
    # (a mixed list makes them raise), then the general one.
    if type(items[0]) is int:
        with contextlib.suppress(TypeError, ValueError):
            return freeze_ids(items), None  # type: ignore[arg-type]
    else:
        with contextlib.suppress(AttributeError):
            ids = freeze_ids([x.id for x in items])  # type: ignore[union-attr]
            if items[0].logprob is None:  # type: ignore[union-attr]
                return ids, None  # the usual stream: no logprobs at all
            return ids, [x.logprob for x in items]  # type: ignore[union-attr]
    lps = [None if type(x) is int else x.logprob for x in items]  # type: ignore[union-attr]
    return freeze_ids(item_ids(items)), lps


class OpenSegment:
    """A segment being built: its kind, where it starts, and its tokens so far."""

    __slots__ = ("items", "kind", "pieces", "start")

    def __init__(self, kind: SegmentKind, start: int) -> None:
        self.kind = kind
        self.start = start
        self.items: list[Item] = []
        self.pieces: list[str] = []

    def freeze(self, tool_call: int | None) -> ReplySegment:
        """Return the finished :class:`ReplySegment`.

        Its ``logprobs`` are ``None`` unless every token carried one.
        """
        ids, lps = _ids_and_logprobs(self.items)
        logprobs = None
        if lps is not None and None not in lps:
            logprobs = np.array(lps, dtype=np.float32)
            logprobs.flags.writeable = False
        return ReplySegment(
            kind=self.kind,
            text="".join(self.pieces),
            ids=ids,
            logprobs=logprobs,
            tool_call=tool_call,
        )
