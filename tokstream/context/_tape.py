"""The context's storage: one growth buffer of IDs, sampled mask and logprobs.

:class:`_Tape` holds three parallel numpy arrays with amortised doubling; the
tree's nodes are ``[start, end)`` spans of it. Views handed out never change
(see the copy-on-write rule on the class). Also the input checks every writer
shares. No tokenization, no I/O.
"""

from __future__ import annotations

from typing import Any, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from .._exceptions import ContextError
from ..chat._base import LeafKind

_T = TypeVar("_T", bound=np.generic)
_INT32_MAX = 2**31 - 1

_NAN = np.float32("nan")

_Held: TypeAlias = tuple[tuple[LeafKind, str, npt.NDArray[np.int32]], ...]
"""A message's closing framing, tokenized but not written yet: ``(kind, text, ids)`` leaves."""


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
