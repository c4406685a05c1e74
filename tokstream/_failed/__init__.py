"""Failed requests, saved for replay: the record, its JSON, and the store on disk.

* ``_record.py``: :class:`FailedRequest` (the record: body, error, attempts,
  partial output), its versioned JSON, and ``load`` with clear errors.
* ``_secrets.py``: what a client must never save, and replacing it by ``***``.
* ``_compare.py``: :class:`ReplayComparison`, a replay's IDs against the saved ones.
* ``_store.py``: :class:`FailedRequestStore` (a private directory, atomic 0600
  files, unique names, retention by count and bytes) and the
  ``FailureRecorder`` a client's streams call when they fail.

Plain Python and ``os``: nothing here imports trio or httpx, and nothing here
sends a request (``Client.replay`` and ``tokstream replay`` do).
"""

from __future__ import annotations

from ._compare import ReplayComparison
from ._record import FailedRequest, SavedAttempt, SavedError
from ._store import FailedRequestStore, FailureRecorder, recorder_for

__all__ = [
    "FailedRequest",
    "FailedRequestStore",
    "FailureRecorder",
    "ReplayComparison",
    "SavedAttempt",
    "SavedError",
    "recorder_for",
]
