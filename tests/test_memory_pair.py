"""qmonitor.testing.memory_pair: a client and a monitor's real QMP session, with no socket."""

from __future__ import annotations

import asyncio

from qmonitor import Monitor
from qmonitor.testing import VirtualClockLoop, run_in_virtual_time
from qmonitor.testing.memory import memory_pair


async def test_a_memory_client_negotiates_and_gets_replies_and_events_in_order() -> None:
    monitor = Monitor(name="vm0")
    monitor.event("BOOTED")

    @monitor.command
    def boot() -> None:
        monitor.emit("BOOTED")

    client = await memory_pair(monitor)
    assert client.greeting is not None and "QMP" in client.greeting
    before_negotiation = await client.execute("query-name")
    assert before_negotiation["error"]["class"] == "CommandNotFound"
    await client.negotiate()
    await client.send({"execute": "boot", "id": 1})
    event = await client.receive()
    assert event["event"] == "BOOTED"
    assert await client.receive() == {"return": {}, "id": 1}
    assert await client.execute("nope") == {
        "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}
    }
    await client.close()
    await monitor.close()


def test_a_hang_up_cancels_what_the_session_runs_in_virtual_time() -> None:
    """In virtual time a command's ten-second sleep costs nothing; the client leaving
    cancels it, as a closed socket would."""
    cancelled = []

    async def scenario(loop: VirtualClockLoop) -> None:
        monitor = Monitor(name="vm0", clock=loop.clock)

        @monitor.command
        async def slow() -> int:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(loop.time())
                raise
            return 10

        client = await memory_pair(monitor)
        await client.negotiate()
        await client.send({"execute": "slow"})
        assert await client.receive_reply(timeout=60) == {"return": 10}
        assert loop.time() == 10.0
        await client.send({"execute": "slow", "id": "left"})
        await loop.sleep_until(12.0)
        await client.close()
        await loop.sleep_until(13.0)
        assert cancelled == [12.0]
        await monitor.close()

    run_in_virtual_time(scenario)
