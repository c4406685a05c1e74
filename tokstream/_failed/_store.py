"""The failed-request store: one JSON file per failed request, in a private directory.

Where records go, in order of precedence: the client's ``failed_requests=``
option; ``$TOKSTREAM_FAILED_DIR`` (``off`` turns saving off);
``$XDG_STATE_HOME/tokstream/failed/``; ``~/.local/state/tokstream/failed/``.

Theory of operation:

* **Private.** The directory is created 0700 (and tightened to 0700 if it
  exists wider and is ours); each file is created 0600, exclusively, without
  following symlinks.
* **Atomic.** A record is written to a hidden temporary file in the same
  directory, then hard-linked to its final name (a link never replaces an
  existing file) and the temporary name removed; where hard links are not
  supported it is renamed. A reader never sees a partial record. Records are
  not fsynced: a power cut just after a failure may lose that record, but a
  failure burst never stalls the event loop on disk flushes.
* **Unique names.** ``20250609T101502.123456Z-InBandError-4242-17.json``: the
  UTC time to the microsecond, the error class, the process ID and a
  process-wide sequence number, so thousands of failures in one second never
  collide; a clash with another host sharing the directory makes the link fail
  and the next number is tried. Sorting the names sorts the records by time.
* **Bounded.** At most ``max_files`` records and ``max_bytes`` bytes; the
  oldest go first. The store keeps a tally of its directory (counted on first
  use) and, when a write takes it over a bound, recounts the directory and
  removes the oldest records down to 90% of both bounds, so a burst recounts
  once per tenth of the bound rather than at every write. The record just
  written is never removed, even if it alone is over ``max_bytes``. Files with
  other names are never touched; temporary files older than an hour (left by
  a crash) are removed.

Writing is plain synchronous ``os`` calls, done in the stream's task when it
fails: a record is one small file (the body plus the partial output; about
5 bytes per token ID), written to the page cache in well under a millisecond,
once per failed request (see the store tests' timing note). Nothing here
imports trio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .._events import Error
from .._exceptions import InvalidRequest
from ..core._request import CompletionRequest
from ._record import FailedRequest
from ._secrets import Scrubber, redact_url

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "ENV_DIR",
    "FailedRequestStore",
    "FailureRecorder",
    "default_directory",
    "recorder_for",
]

ENV_DIR = "TOKSTREAM_FAILED_DIR"
"""The environment variable naming the store's directory (``off``: do not save)."""
DEFAULT_MAX_FILES = 1000
"""Records kept by default."""
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Bytes of records kept by default."""

_OFF = frozenset(("off", "0", "false", "no", "none"))
_NAME = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[A-Za-z0-9_]{1,64}-\d+-\d+\.json")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_STALE_TMP = 3600.0
_LOW_WATER = 0.9
_sequence = itertools.count(1)
log = logging.getLogger("tokstream")


def default_directory(environ: Mapping[str, str] | None = None) -> Path | None:
    """Return where records go by default, or ``None`` if saving is off.

    ``$TOKSTREAM_FAILED_DIR`` (``off``, ``0``, ``false``, ``no`` or ``none``:
    off), else ``$XDG_STATE_HOME/tokstream/failed`` (an absolute
    ``XDG_STATE_HOME`` only, as the XDG spec says), else
    ``~/.local/state/tokstream/failed``.

    Raises:
        RuntimeError: No home directory can be found (and neither variable is set).
    """
    env = os.environ if environ is None else environ
    value = env.get(ENV_DIR, "").strip()
    if value:
        if value.lower() in _OFF:
            return None
        return Path(value).expanduser().absolute()
    state = env.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "tokstream" / "failed"


class FailedRequestStore:
    """A directory of saved failed requests, bounded in count and bytes.

    Give one to ``Client(failed_requests=...)`` to choose the directory or the
    bounds; by default a client uses the store :meth:`from_environment` gives.
    See the module docstring for permissions, atomic writes, names and
    retention. Safe to share between clients and threads.

    Args:
        directory: Where records go (created 0700 on the first save).
        max_files: The most records kept (>= 1).
        max_bytes: The most bytes of records kept (>= 1); the newest record is
            kept even if it alone is larger.

    Raises:
        InvalidRequest: A bad argument.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_files: int = DEFAULT_MAX_FILES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
            raise InvalidRequest("directory", directory, "must be a path")
        for name, value in (("max_files", max_files), ("max_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequest(name, value, "must be an int >= 1")
        self.directory = Path(directory).expanduser().absolute()
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._ready = False
        self._count = 0
        self._bytes = 0

    def __repr__(self) -> str:
        return (
            f"<tokstream.FailedRequestStore {self.directory} max_files={self.max_files} "
            f"max_bytes={self.max_bytes}>"
        )

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None
    ) -> FailedRequestStore | None:
        """Return the default store (see :func:`default_directory`), or ``None`` if off.

        Clients that use the same directory share one store, and so one tally.
        A missing home directory turns saving off (with a warning in the log).
        """
        env = os.environ if environ is None else environ
        # Building a Client costs microseconds: resolve each environment once.
        key = (env.get(ENV_DIR), env.get("XDG_STATE_HOME"), env.get("HOME"))
        with _shared_lock:
            if key in _by_environment:
                return _by_environment[key]
        try:
            directory = default_directory(env)
        except RuntimeError as exc:
            log.warning("tokstream: not saving failed requests: %s; set %s", exc, ENV_DIR)
            directory = None
        with _shared_lock:
            store = None
            if directory is not None:
                store = _shared.get(directory)
                if store is None:
                    store = _shared[directory] = cls(directory)
            _by_environment[key] = store
            return store

    # -- writing --------------------------------------------------------------

    def save(self, record: FailedRequest) -> Path:
        """Write ``record`` atomically as a new 0600 file; return its path.

        Removes the oldest records if this one takes the store over a bound.

        Raises:
            OSError: The directory or the file could not be written (nothing
                partial is left behind).
        """
        data = record.to_json()
        kind = _UNSAFE.sub("_", record.error.class_name)[:64] or "Error"
        stamp = record.failed_at.strftime("%Y%m%dT%H%M%S.%fZ")
        with self._lock:
            self._prepare()
            try:
                path = self._write(data, stamp, kind)
            except FileNotFoundError:  # the directory was removed since: make it again
                self._ready = False
                self._prepare()
                path = self._write(data, stamp, kind)
            self._count += 1
            self._bytes += len(data)
            if self._count > self.max_files or self._bytes > self.max_bytes:
                self._prune(keep=path.name)
        return path

    def _prepare(self) -> None:
        """Create the directory 0700 (or tighten it), and count it, on first use."""
        if self._ready:
            return
        directory = self.directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.stat(directory)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory))
        if stat.S_IMODE(st.st_mode) != 0o700:
            if hasattr(os, "getuid") and st.st_uid != os.getuid():
                raise PermissionError(
                    errno.EPERM,
                    f"the directory is owned by uid {st.st_uid} and open to others "
                    f"({stat.S_IMODE(st.st_mode):o}); records are kept private",
                    str(directory),
                )
            os.chmod(directory, 0o700)
        entries = self._scan()
        self._count = len(entries)
        self._bytes = sum(size for _, size in entries)
        self._ready = True

    def _write(self, data: bytes, stamp: str, kind: str) -> Path:
        directory = self.directory
        pid = os.getpid()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        while True:
            tmp = directory / f".{pid}-{next(_sequence)}.tmp"
            try:
                fd = os.open(tmp, flags, 0o600)
            except FileExistsError:
                continue
            break
        try:
            try:
                os.fchmod(fd, 0o600)  # a umask cannot widen it, but one may narrow it
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            while True:
                path = directory / f"{stamp}-{kind}-{pid}-{next(_sequence)}.json"
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                        raise
                    os.rename(tmp, path)  # no hard links here: the name is unique anyway
                return path
        finally:
            with contextlib.suppress(FileNotFoundError):  # linked and removed, or renamed
                os.unlink(tmp)

    def _prune(self, keep: str) -> None:
        """Recount the directory; remove the oldest records down to the low-water marks."""
        entries = self._scan()
        count = len(entries)
        total = sum(size for _, size in entries)
        if count > self.max_files or total > self.max_bytes:
            low_files = max(1, int(self.max_files * _LOW_WATER))
            low_bytes = max(1, int(self.max_bytes * _LOW_WATER))
            for name, size in entries:
                if count <= low_files and total <= low_bytes:
                    break
                if name == keep:
                    continue
                with contextlib.suppress(FileNotFoundError):  # another process pruned it
                    os.unlink(self.directory / name)
                count -= 1
                total -= size
        self._count = count
        self._bytes = total

    def _scan(self) -> list[tuple[str, int]]:
        """Return ``(name, size)`` of every record, oldest first; remove stale temporaries."""
        entries: list[tuple[str, int]] = []
        now = time.time()
        with os.scandir(self.directory) as it:
            for entry in it:
                name = entry.name
                try:
                    if _NAME.fullmatch(name):
                        st = entry.stat(follow_symlinks=False)
                        if stat.S_ISREG(st.st_mode):
                            entries.append((name, st.st_size))
                    elif (
                        name.startswith(".")
                        and name.endswith(".tmp")
                        and now - entry.stat(follow_symlinks=False).st_mtime > _STALE_TMP
                    ):
                        os.unlink(entry.path)
                except FileNotFoundError:
                    continue
        entries.sort()
        return entries

    # -- reading --------------------------------------------------------------

    def paths(self) -> list[Path]:
        """Return the records' paths, newest first (``[]`` if the directory is missing)."""
        try:
            with os.scandir(self.directory) as it:
                names = [e.name for e in it if _NAME.fullmatch(e.name)]
        except FileNotFoundError:
            return []
        return [self.directory / name for name in sorted(names, reverse=True)]


_shared: dict[Path, FailedRequestStore] = {}
_by_environment: dict[tuple[str | None, ...], FailedRequestStore | None] = {}
_shared_lock = threading.Lock()


def recorder_for(option: object, secrets: Iterable[str]) -> FailureRecorder | None:
    """Return what saves a client's failed requests, for its ``failed_requests=`` option.

    ``None`` (the default) means the environment's store (:meth:`FailedRequestStore.
    from_environment`), resolved when it is first needed, so that building a
    client reads no environment and touches no disk. ``False`` means off.

    Raises:
        InvalidRequest: The option is not a store, a path, ``False`` or ``None``.
    """
    if option is False:
        return None
    if option is None or isinstance(option, FailedRequestStore):
        return FailureRecorder(option, secrets)
    if isinstance(option, (str, os.PathLike)) and os.fspath(option):
        return FailureRecorder(FailedRequestStore(option), secrets)
    raise InvalidRequest(
        "failed_requests",
        option,
        "must be a directory, a FailedRequestStore, False (do not save) or None "
        f"(the default: ${ENV_DIR}, else $XDG_STATE_HOME/tokstream/failed)",
    )


class FailureRecorder:
    """Saves one client's failed streams to its store, keeping the client's secrets out.

    A stream calls :meth:`record` once, with its terminal ``Error`` (after
    retries, if any). Saving never raises and never replaces the stream's own
    error: a failure to save is reported next to it.

    Args:
        store: Where records go; ``None`` for the environment's store, looked
            up on first use (it may say saving is off).
        secrets: Strings never to write (the API key, the URL's userinfo and
            password, sensitive header values).
    """

    __slots__ = ("_resolved", "_secrets", "_store", "_warned")

    def __init__(self, store: FailedRequestStore | None, secrets: Iterable[str]) -> None:
        self._store = store
        self._resolved = store is not None
        self._secrets = tuple(s for s in secrets if s)
        self._warned = False

    def __repr__(self) -> str:
        return f"<FailureRecorder {self._store!r}>"  # never the secrets

    @property
    def store(self) -> FailedRequestStore | None:
        """Where records go, or ``None`` if the environment turns saving off."""
        if not self._resolved:
            self._store = FailedRequestStore.from_environment()
            self._resolved = True
        return self._store

    def record(
        self,
        event: Error,
        *,
        request: CompletionRequest,
        model: str,
        url: str,
        request_id: str | None,
    ) -> Error:
        """Save the failed request; return ``event`` saying where it went, or why not.

        The returned ``Error`` has ``saved_to`` (and its exception ``saved_to``
        and a note), or ``save_error`` (and a note) if saving failed.
        """
        store = self.store
        if store is None:
            return event
        exc = event.error
        try:
            record = FailedRequest.from_error(
                event,
                body=request.encode(model),
                url=url,
                model=request.model or model,
                request_id=request_id,
                secrets=self._secrets,
            )
            path = store.save(record)
        except Exception as failure:  # saving must never hide the stream's own error
            clean = Scrubber(self._secrets)
            problem = clean(
                f"could not save the failed request to {store.directory}: "
                f"{type(failure).__name__}: {failure}"
            )
            exc.add_note(f"tokstream: {problem}")
            if not self._warned:
                self._warned = True
                log.warning(
                    "tokstream: %s (%s at %s)", problem, type(exc).__name__, redact_url(url)
                )
            else:
                log.debug("tokstream: %s", problem)
            return dataclasses.replace(event, save_error=problem)
        exc.saved_to = path
        exc.add_note(f"tokstream saved this failed request to {path} (tokstream replay FILE)")
        log.debug("tokstream: saved a failed request (%s) to %s", type(exc).__name__, path)
        return dataclasses.replace(event, saved_to=path)
