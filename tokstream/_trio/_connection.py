"""One HTTP connection's socket I/O for the trio transport: connect, send, receive, close.

Plain HTTP reads and writes the non-blocking socket directly, with trio's
public low-level waits (``wait_readable`` / ``wait_writable``); https wraps
the same socket in ``trio.SSLStream``. The direct path exists for the paced
regime, where every event arrives in its own read: a read that must wait
costs one readiness wait (in a cancel scope only when the caller's deadline
is finite), where ``trio.SocketStream.receive_some`` adds a conflict
detector, an async context manager and a failed ``recv`` per read.

Trio's rules are kept: a receive is a checkpoint (a read that finds bytes
waiting checks for cancellation before it and yields after it, as
``SocketStream.receive_some`` does), and cancelling it loses no bytes. A
connection whose last read had to wait (a paced stream) waits first next time
instead of trying ``recv`` first.
Closing is synchronous and forceful: waiters are woken
(``notify_closing``), then the socket is closed.

Connecting tries each address ``getaddrinfo`` returns, in order (no happy
eyeballs: the client talks to one server, usually by a literal address).
"""

from __future__ import annotations

import errno
import math
import os
import socket
import ssl

import trio

__all__ = ["Connection", "open_connection"]

_WAITING = (BlockingIOError, InterruptedError)


class Connection:
    """One open connection: a non-blocking socket, and the TLS stream over it for https.

    Attributes:
        requests: Requests sent on it so far.
        idle_since: When it was last put in its pool's idle deque (trio time).
    """

    __slots__ = ("_socket", "_tls", "_waited", "_waiting", "idle_since", "requests")

    def __init__(self, sock: socket.socket, tls: trio.SSLStream[trio.SocketStream] | None) -> None:
        self._socket = sock
        self._tls = tls
        self._waited = False  # the last read had to wait: the next one probably will too
        self._waiting = False  # a task waits on the socket now (close must wake it)
        self.requests = 0
        self.idle_since = 0.0

    async def receive(self, size: int, deadline: float = math.inf) -> bytes | None:
        """Return the next bytes (``b""`` at EOF), or ``None`` once ``deadline`` passed.

        Cancel-safe: if cancelled, no byte was consumed.

        Raises:
            OSError: The connection broke (reset, or closed underneath).
            trio.BrokenResourceError: The TLS layer broke.
            trio.ClosedResourceError: The connection was closed while waiting.
        """
        if self._tls is not None:
            if deadline == math.inf:
                return bytes(await self._tls.receive_some(size))
            with trio.CancelScope(deadline=deadline):
                return bytes(await self._tls.receive_some(size))
            return None
        sock = self._socket
        if not self._waited:
            # A fast stream: bytes are usually waiting, so try before waiting.
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                data = sock.recv(size)
            except _WAITING:
                self._waited = True
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
        # A paced stream: every read waits, so wait first (a failed recv costs
        # a syscall and an exception); the wait is the checkpoint.
        if sock.fileno() < 0:
            raise trio.ClosedResourceError("the connection was closed")
        while True:
            self._waiting = True
            try:
                if deadline == math.inf:
                    await trio.lowlevel.wait_readable(sock)
                else:
                    with trio.CancelScope(deadline=deadline) as scope:
                        await trio.lowlevel.wait_readable(sock)
                    if scope.cancelled_caught:
                        return None
            finally:
                self._waiting = False
            try:
                data = sock.recv(size)
            except _WAITING:
                continue
            # Reading all that was asked means more may be waiting: try first next time.
            self._waited = len(data) < size
            return data

    async def send_all(self, data: bytes) -> None:
        """Send all of ``data``.

        Raises:
            OSError: The connection broke.
            trio.BrokenResourceError: The TLS layer broke.
            trio.ClosedResourceError: The connection was closed while waiting.
        """
        if self._tls is not None:
            await self._tls.send_all(data)
            return
        sock = self._socket
        view = memoryview(data)
        await trio.lowlevel.checkpoint_if_cancelled()
        while view:
            try:
                sent = sock.send(view)
            except _WAITING:
                self._waiting = True
                try:
                    await trio.lowlevel.wait_writable(sock)
                finally:
                    self._waiting = False
                continue
            view = view[sent:]
        await trio.lowlevel.cancel_shielded_checkpoint()

    def close(self) -> None:
        """Close the socket now (forcefully: no TLS close_notify); idempotent.

        A task waiting on the socket is woken first (``notify_closing``, which
        then raises ``trio.ClosedResourceError`` in it). With nobody waiting,
        trio holds no state for the socket, and that call is skipped: it was
        about half of what cancelling 10,000 streams cost.
        """
        sock = self._socket
        if sock.fileno() >= 0:
            if self._waiting or self._tls is not None:
                trio.lowlevel.notify_closing(sock)
            sock.close()

    def is_readable(self) -> bool:
        """Whether bytes or an EOF are waiting (for an idle kept-alive connection: stale)."""
        try:
            self._socket.recv(1, socket.MSG_PEEK)
        except _WAITING:
            return False
        except OSError:  # reset, or closed underneath us
            return True
        return True


async def _connect(sock: socket.socket, address: tuple[object, ...]) -> int:
    """Connect the non-blocking ``sock``; return 0, or the errno of the failure."""
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        code = sock.connect_ex(address)
    except OSError as exc:  # e.g. an address family the host cannot use
        return exc.errno or errno.EINVAL
    if code in (errno.EINPROGRESS, errno.EAGAIN):
        await trio.lowlevel.wait_writable(sock)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return code


async def open_connection(host: str, port: int, context: ssl.SSLContext | None) -> Connection:
    """Connect to ``host:port`` (TCP, then TLS with ``context`` if given).

    Raises:
        OSError: No address could be connected to (the first failure is named).
        trio.BrokenResourceError: The TLS handshake failed (its cause is the ``ssl`` error).
    """
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    failures: list[OSError] = []
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            code = await _connect(sock, address)
        except BaseException:
            sock.close()
            raise
        if code:
            sock.close()
            where = f"{address[0]!s} port {address[1]!s}"
            failures.append(OSError(code, f"{os.strerror(code)} ({where})"))
            continue
        if context is None:
            return Connection(sock, None)
        tls = trio.SSLStream(
            trio.SocketStream(trio.socket.from_stdlib_socket(sock)),
            context,
            server_hostname=host,
            https_compatible=True,
        )
        try:
            await tls.do_handshake()
        except BaseException:
            sock.close()
            raise
        return Connection(sock, tls)
    raise OSError(
        f"all attempts to connect to {host}:{port} failed: "
        + "; ".join(f"{exc.strerror or exc}" for exc in failures)
    )
