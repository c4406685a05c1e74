"""The trio transport against the live CPU vLLM: its connections are kept alive and reused.

vLLM (uvicorn) ends each stream with a chunked terminator right after
``[DONE]``; the stream loop reads it, so the connection goes back to the pool
and the next stream goes out on it. Counted twice: by the pool's statistics,
and from ``/proc/net/tcp`` (the TCP connections to the server's port, on both
ends).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tokstream
from tokstream import Done, Token
from tokstream.testing import VLLMServer

pytestmark = pytest.mark.vllm

ESTABLISHED = "01"


def tcp_connections(port: int) -> tuple[set[int], int]:
    """This process's local ports connected to ``port``, and the server's accepted sockets."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ours: set[int] = set()
    accepted = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if fields[3] != ESTABLISHED:
            continue
        if remote_port == port and fields[9] in inodes:
            ours.add(local_port)
        elif local_port == port:
            accepted += 1
    return ours, accepted


async def test_fifty_sequential_streams_share_one_connection(vllm_server: VLLMServer) -> None:
    server = vllm_server
    timeouts = tokstream.Timeouts(connect=5.0, stall=60.0)
    seen_ports: set[int] = set()
    async with tokstream.Client(server.base_url, model=server.model, timeouts=timeouts) as client:
        for i in range(50):
            async with client.stream([9707, 11, 1879], max_tokens=3, temperature=0.0) as events:
                got = [ev async for ev in events]
            assert isinstance(got[-1], Done), got[-1]
            assert sum(isinstance(ev, Token) for ev in got) == 3
            ours, accepted = tcp_connections(server.port)
            seen_ports |= ours
            # One connection, kept open between streams, on both ends.
            assert len(ours) == 1, (i, ours)
            assert accepted == 1, (i, accepted)
        pool = client.statistics().pool
    assert pool is not None
    assert (pool.opened, pool.reused, pool.stale, pool.closed) == (1, 49, 0, 0)
    assert len(seen_ports) == 1  # the same local port every time: the same TCP connection
    assert tcp_connections(server.port)[0] == set()  # closed with the client
