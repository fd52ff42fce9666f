"""The README's embedding example runs as written, driven by its own qemu.qmp client block."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import wait_until

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE_SOCKET = "/tmp/demo.sock"


def readme_blocks() -> tuple[str, str]:
    """The first two ```python blocks after "## Embedding": the server and the client."""
    text = README.read_text()
    start = text.index("## Embedding")
    blocks = re.findall(r"```python\n(.*?)```", text[start:], re.DOTALL)
    assert len(blocks) >= 2, "the README lost its embedding example"
    return blocks[0], blocks[1]


async def test_readme_embedding_example(short_tmp: Path) -> None:
    """Server block in one process, client block in another: 42, 42 and the ANSWERED event."""
    server_code, client_code = readme_blocks()
    assert EXAMPLE_SOCKET in server_code and EXAMPLE_SOCKET in client_code
    socket_path = str(short_tmp / "demo.sock")
    server_code = server_code.replace(EXAMPLE_SOCKET, socket_path)
    client_code = client_code.replace(EXAMPLE_SOCKET, socket_path)
    client_code = "import asyncio\n" + client_code + "\nasyncio.run(client())\n"

    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        server_code,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_until(lambda: os.path.exists(socket_path) or server.returncode is not None, 30)
        assert server.returncode is None, "the README server exited"
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            client_code,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(client.communicate(), 30)
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()
        assert client.returncode == 0, stderr.decode()
        assert stdout.decode().splitlines() == ["42", "42", "ANSWERED {'after': 0.5}"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.terminate()
        try:
            await asyncio.wait_for(server.communicate(), 10)
        except TimeoutError:
            server.kill()
            await server.wait()
