"""A routed cluster on one machine: N tiny CPU vLLMs and vllm-router in front of them.

Theory of operation:

* :meth:`VLLMCluster.start` launches every replica from the calling thread,
  so they start side by side (about 45 s for two on two cores), waits for
  each ``/health``, then starts :class:`~tokstream.testing.VLLMRouter` in
  front of them (about 1 s). If anything fails, everything that started is
  stopped before the error propagates.
* Replica ``i`` is tagged ``str(i)``: every response it sends carries
  ``x-tokstream-replica: i`` (:data:`~tokstream.testing.REPLICA_HEADER`), and
  the router passes that header through, so a client can tell which replica
  served each stream.
* :meth:`VLLMCluster.stop` stops the router first (no new requests), then the
  replicas side by side (one thread each), each by PID with its whole process
  family.
  :meth:`VLLMCluster.kill_backend` SIGKILLs one replica's family, as a crash
  would, for failover tests; the router keeps running.

Each replica takes about 4 GB of RAM; mind the machine (two replicas and one
more server fit in 24 GB with room to spare).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from ._common import home_dir, log
from ._router import FAILOVER_ARGS, VLLMRouter
from ._server import REPLICA_HEADER, VLLMServer

__all__ = ["VLLMCluster"]


class VLLMCluster:
    """``n`` tiny CPU vLLM replicas behind vllm-router, all on 127.0.0.1.

    Use it as a context manager (``with VLLMCluster() as cluster: ...``) or
    call :meth:`start` and :meth:`stop`; both block. Give
    :attr:`base_url` (the router's) to ``tokstream.Client``, with an
    ``X-Session-ID`` header per conversation for affinity.

    Args:
        n: The number of replicas.
        home: The kit's home directory (vLLM, the model, the router, logs).
        port: The router's port; a free one if omitted.
        policy: The router's ``--policy`` (``consistent_hash``: the same
            ``X-Session-ID`` always lands on the same replica).
        backend_args: More vLLM arguments for every replica.
        per_backend_args: More vLLM arguments for replica ``i``, by index,
            after ``backend_args`` (e.g. ``{0: ("--max-num-seqs", "1")}``).
        failover_args: The router's circuit-breaker settings (default
            :data:`~tokstream.testing.FAILOVER_ARGS`).
        router_args: More vllm-router arguments, appended last.
        log_dir: Where the logs go (``backend-I.log``, ``router.log``); by
            default each process's own default log under ``<home>/logs``.
        startup_timeout: Seconds to wait for each replica's ``/health``.
        die_with_parent: SIGTERM every process when this process dies.
    """

    model = VLLMServer.model
    """The served model name that clients send."""

    replica_header = REPLICA_HEADER
    """The response header naming the replica that served a request (its index)."""

    def __init__(
        self,
        n: int = 2,
        *,
        home: Path | str | None = None,
        port: int | None = None,
        policy: str = "consistent_hash",
        backend_args: Sequence[str] = (),
        per_backend_args: Mapping[int, Sequence[str]] | None = None,
        failover_args: Sequence[str] = FAILOVER_ARGS,
        router_args: Sequence[str] = (),
        log_dir: Path | str | None = None,
        startup_timeout: float = 300.0,
        die_with_parent: bool = True,
    ) -> None:
        if n < 1:
            raise ValueError(f"a cluster needs at least one replica, not {n}")
        per_backend = dict(per_backend_args or {})
        if unknown := sorted(set(per_backend) - set(range(n))):
            raise ValueError(f"per_backend_args names replicas {unknown}; there are {n}")
        self._home = home_dir(home)
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self.backends: tuple[VLLMServer, ...] = tuple(
            VLLMServer(
                home=self._home,
                extra_args=(*backend_args, *per_backend.get(i, ())),
                log_path=self._log_dir / f"backend-{i}.log" if self._log_dir else None,
                startup_timeout=startup_timeout,
                die_with_parent=die_with_parent,
                tag=str(i),
            )
            for i in range(n)
        )
        """The replicas, in index order (each a :class:`~tokstream.testing.VLLMServer`)."""
        self._router_options = {
            "port": port,
            "policy": policy,
            "failover_args": tuple(failover_args),
            "extra_args": tuple(router_args),
            "die_with_parent": die_with_parent,
        }
        self._router: VLLMRouter | None = None

    @property
    def router(self) -> VLLMRouter:
        """The running router (after :meth:`start`)."""
        if self._router is None:
            raise RuntimeError("the cluster has not been started")
        return self._router

    @property
    def base_url(self) -> str:
        """The router's ``http://127.0.0.1:PORT/v1``: give it to ``tokstream.Client``."""
        return self.router.base_url

    @property
    def root_url(self) -> str:
        """The router's ``http://127.0.0.1:PORT`` (``/health``, ``/workers``)."""
        return self.router.root_url

    router_url = root_url

    @property
    def pids(self) -> dict[str, int]:
        """``{"router": PID, "backend-0": PID, ...}`` for what is running."""
        pids = {"router": self.router.pid} if self._router and self._router.is_running() else {}
        pids.update({f"backend-{i}": b.pid for i, b in enumerate(self.backends) if b.is_running()})
        return pids

    def backend(self, replica: str | int) -> VLLMServer:
        """The replica named by an ``x-tokstream-replica`` header value (or an index)."""
        return self.backends[int(replica)]

    def is_running(self) -> bool:
        """Whether the router runs (replicas may have been killed)."""
        return self._router is not None and self._router.is_running()

    def start(self) -> VLLMCluster:
        """Start every replica side by side, then the router; block until all are ready.

        Returns:
            ``self``.

        Raises:
            ServerStartError: A replica or the router did not start (vLLM or
                vllm-router missing, a process exited, a timeout). Everything
                that started is stopped first; the message ends with that
                process's log tail.
            RuntimeError: The cluster is already running.
        """
        if self._router is not None:
            raise RuntimeError("the cluster is already running")
        log.info("cluster: starting %d vLLM replicas side by side ...", len(self.backends))
        try:
            for backend in self.backends:
                backend.launch()
            for backend in self.backends:
                backend.wait_ready()
            router = VLLMRouter(
                [b.root_url for b in self.backends],
                home=self._home,
                log_path=self._log_dir / "router.log" if self._log_dir else None,
                **self._router_options,  # type: ignore[arg-type]
            )
            self._router = router.start()
        except BaseException:
            self.stop()
            raise
        log.info(
            "cluster: ready on %s (replicas %s)",
            self.base_url,
            ", ".join(b.base_url for b in self.backends),
        )
        return self

    def kill_backend(self, index: int) -> list[int]:
        """SIGKILL replica ``index`` and its whole family at once, as a crash would.

        Its open streams break mid-way; the router keeps running and, with
        :data:`~tokstream.testing.FAILOVER_ARGS`, sends that replica's sessions
        to a live one from the next request on.

        Returns:
            The PIDs that were killed.
        """
        log.info("cluster: killing replica %d (PID %d)", index, self.backends[index].pid)
        return self.backends[index].kill()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the router, then every replica at once, each with its process family.

        Each gets SIGTERM, then SIGKILL after ``timeout`` seconds if still alive.
        Idempotent; returns once they are all gone.
        """
        router, self._router = self._router, None
        try:
            if router is not None:
                router.stop(timeout)
        finally:  # the replicas stop even if stopping the router raised
            threads = [
                threading.Thread(target=b.stop, args=(timeout,), name=f"stop replica {i}")
                for i, b in enumerate(self.backends)
                if b.is_running()
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    def __enter__(self) -> VLLMCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        if self._router is None:
            return f"<VLLMCluster {len(self.backends)} replicas stopped>"
        return f"<VLLMCluster {len(self.backends)} replicas router={self.base_url}>"
