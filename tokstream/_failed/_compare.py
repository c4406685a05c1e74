"""Comparing a replay's token IDs with a saved request's partial output.

:class:`ReplayComparison` says how far two outputs agree: the length of the
identical prefix and the first differing token. Data only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy", globals())


__all__ = ["ReplayComparison"]


@dataclass(frozen=True, slots=True)
class ReplayComparison:
    """How a replay's token IDs compare with a saved request's partial output.

    Attributes:
        saved: How many IDs the saved request had received.
        replayed: How many IDs the replay produced.
        common_prefix: How many leading IDs are equal.
        first_difference: The index of the first ID that differs, or ``None``
            when one output is a prefix of the other.
        saved_id: The saved ID at ``first_difference`` (else ``None``).
        replayed_id: The replay's ID at ``first_difference`` (else ``None``).
    """

    saved: int
    replayed: int
    common_prefix: int
    first_difference: int | None = None
    saved_id: int | None = None
    replayed_id: int | None = None

    @classmethod
    def of(cls, saved: object, replayed: object) -> ReplayComparison:
        """Compare two ID sequences (numpy arrays or sequences of ints)."""
        a = np.asarray(saved, dtype=np.int64).ravel()
        b = np.asarray(replayed, dtype=np.int64).ravel()
        n = min(a.size, b.size)
        diff = np.flatnonzero(a[:n] != b[:n])
        if diff.size:
            i = int(diff[0])
            return cls(int(a.size), int(b.size), i, i, int(a[i]), int(b[i]))
        return cls(int(a.size), int(b.size), n)

    @property
    def reproduced(self) -> bool:
        """Whether the replay began with every saved ID."""
        return self.first_difference is None and self.common_prefix == self.saved

    def describe(self) -> str:
        """Return one line: ``identical prefix of N tokens`` or the first difference."""
        if self.first_difference is not None:
            return (
                f"first difference at token {self.first_difference}: saved ID "
                f"{self.saved_id}, replay ID {self.replayed_id} (identical prefix of "
                f"{self.common_prefix} tokens)"
            )
        if self.saved == 0:
            return "the saved request had received no tokens; nothing to compare"
        if self.common_prefix < self.saved:
            return (
                f"identical prefix of {self.common_prefix} tokens, then the replay ended; "
                f"the saved output had {self.saved}"
            )
        more = self.replayed - self.saved
        return f"identical prefix of {self.saved} tokens" + (
            f" (the replay went on for {more} more)" if more else ""
        )
