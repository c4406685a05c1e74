"""The segment under construction: tokens appended one by one, frozen once.

Kept as three parallel lists (IDs, logprobs, text pieces) because appending to
them is the cheapest thing the per-token path can do; numpy arrays are built
once, when the segment closes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._events import ReplySegment, SegmentKind

__all__ = ["OpenSegment", "freeze_ids"]


def freeze_ids(ids: list[int]) -> npt.NDArray[np.int32]:
    """Return ``ids`` as a read-only int32 array."""
    arr = np.array(ids, dtype=np.int32)
    arr.flags.writeable = False
    return arr


def _freeze_lps(lps: list[float | None]) -> npt.NDArray[np.float32] | None:
    if not lps or any(lp is None for lp in lps):
        return None
    arr = np.array(lps, dtype=np.float32)
    arr.flags.writeable = False
    return arr


class OpenSegment:
    """A segment being built: its kind, where it starts, and its tokens so far."""

    __slots__ = ("ids", "kind", "lps", "pieces", "start")

    def __init__(self, kind: SegmentKind, start: int) -> None:
        self.kind = kind
        self.start = start
        self.ids: list[int] = []
        self.lps: list[float | None] = []
        self.pieces: list[str] = []

    def freeze(self, tool_call: int | None) -> ReplySegment:
        """Return the finished :class:`ReplySegment`."""
        return ReplySegment(
            kind=self.kind,
            text="".join(self.pieces),
            ids=freeze_ids(self.ids),
            logprobs=_freeze_lps(self.lps),
            tool_call=tool_call,
        )
