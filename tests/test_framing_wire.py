"""QMP input framing at QEMU's real limits, on a real socket (tests/test_stream.py has the rules).

QEMU 7.2 reports each of its three per-message limits and starts afresh (json-streamer.c resets
its counts), so a request that follows an over-limit message that never closes is answered.
The nesting case is also compared with real QEMU in tests/test_differential.py; the token count
and size limits take QEMU seconds to minutes, so here only our server runs them.
"""

from __future__ import annotations

import pytest

from conftest import TestServer
from qmonitor.qmp.stream import MAX_NESTING, MAX_TOKEN_COUNT, MAX_TOKEN_SIZE

REQUEST = b'{"execute":"echo","arguments":{"value":"after"},"id":"after"}'


@pytest.mark.parametrize(
    ("never_closed", "desc"),
    [
        pytest.param(b"[" * (MAX_NESTING + 1), "JSON nesting depth limit exceeded", id="nesting"),
        # 2 Mi + 1 tokens, ending in a value (after a ',' the next value would be an element).
        pytest.param(
            b"[" + b"1," * (MAX_TOKEN_COUNT // 2) + b"1",
            "JSON token count limit exceeded",
            id="token-count",
        ),
        # The string is cut by the limit and dropped whole; the object stays open.
        pytest.param(
            b'{"a": "' + b"x" * MAX_TOKEN_SIZE + b'"', "JSON token size limit exceeded", id="size"
        ),
    ],
)
async def test_request_after_an_over_limit_message_that_never_closes(
    server: TestServer, never_closed: bytes, desc: str
) -> None:
    client = await server.client()
    try:
        await client.send_raw(never_closed)
        await client.send_raw(REQUEST)
        assert await client.receive(timeout=30) == {
            "error": {"class": "GenericError", "desc": desc}
        }
        assert await client.receive(timeout=30) == {"return": "after", "id": "after"}
    finally:
        await client.close()


async def test_closed_over_deep_message_costs_one_error(server: TestServer) -> None:
    # QEMU 7.2 sends 1026 errors for this message (tests/test_differential.py).
    client = await server.client()
    try:
        depth = MAX_NESTING + 1
        await client.send_raw(b"[" * depth + b"]" * depth + REQUEST)
        assert await client.receive() == {
            "error": {"class": "GenericError", "desc": "JSON nesting depth limit exceeded"}
        }
        assert await client.receive() == {"return": "after", "id": "after"}
    finally:
        await client.close()
