"""The stream transports every client test runs over: the trio-native one and httpx.

Import the fixture into a test module (``from ._transports import transport``)
and build clients with ``transport=transport``; each test then runs once per
stream transport.
"""

from __future__ import annotations

import pytest

STREAM_TRANSPORTS = ("trio", "httpx")


@pytest.fixture(params=STREAM_TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The name of a stream transport (``Client(transport=...)``)."""
    name: str = request.param
    return name
