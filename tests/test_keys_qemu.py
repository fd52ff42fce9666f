"""``send-key``, ``screendump`` (QMP) and ``sendkey``, ``screendump`` (HMP) against QEMU 7.2.

libvirt's ``virsh send-key`` and ``virsh screenshot`` run them. Both binaries get the same
requests and must give the same replies: the keys are taken (no guest reads them), the errors
of the key union and its enum are QEMU's, and with no display (``-display none -nodefaults``)
``screendump`` answers QEMU's errors and writes nothing. The schema entries have QEMU's shapes,
and TAB completes ``sendkey``'s key names as QEMU's human monitor does.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from launched_qmp import STANDIN, connect_when_listening, paused_machine_replies, qmp_lines
from qmonitor.testing import QEMU_BINARY, command_shape

pytestmark = pytest.mark.qemu


def send_key(*keys: dict[str, Any], **arguments: object) -> dict[str, Any]:
    return {"execute": "send-key", "arguments": {"keys": list(keys), **arguments}}


def qcode(name: object) -> dict[str, Any]:
    return {"type": "qcode", "data": name}


def number(value: object) -> dict[str, Any]:
    return {"type": "number", "data": value}


def screendump(**arguments: object) -> dict[str, Any]:
    return {"execute": "screendump", "arguments": arguments}


def hmp(line: str) -> dict[str, Any]:
    return {"execute": "human-monitor-command", "arguments": {"command-line": line}}


HMP_LINES = [
    "sendkey ctrl-alt-f1", "sendkey 0x1e-0x30", "sendkey a 200", "sendkey <", "sendkey <-a",
    "sendkey a-<", "sendkey 1", "sendkey 0xffffffffffffffffffff", "sendkey foo", "sendkey Ctrl",
    "sendkey a-", "sendkey -a", "sendkey --", 'sendkey ""', "sendkey 0x", "sendkey 0x1g",
    "sendkey <x", "sendkey a-foo-b", 'sendkey "a b"', "sendkey 0X1e", "sendkey 010",
    "sendkey 0x-a", "sendkey 0x+1", "sendkey 0x 1", "sendkey 0x 1e", "sendkey a 0x100000000",
    "sendkey a -1", "sendkey a b", "sendkey a 1 2", "sendkey", "help sendkey",
    "screendump {dir}/h.ppm", "screendump {dir}/h.png -f png", "screendump {dir}/h -f jpg",
    "screendump {dir}/h -f PNG", "screendump {dir}/h nosuch", "screendump {dir}/h nosuch 1",
    "screendump {dir}/h -f png nosuch", "screendump {dir}/h balloon0",
    "screendump {dir}/h balloon0 3", "screendump -f png {dir}/h", "screendump {dir}/h -f",
    "screendump {dir}/h nosuch x", "screendump {dir}/h -g", "screendump {dir}/h nosuch 1 2",
    'screendump ""', "screendump", "help screendump",
]  # fmt: skip

REQUESTS: list[dict[str, Any]] = [
    send_key(qcode("a")),
    send_key(qcode("ctrl"), qcode("alt"), qcode("delete"), **{"hold-time": 50}),
    send_key(),
    send_key(number(30), number(-1), number(99999999999999)),
    send_key(qcode("a"), **{"hold-time": -5}),
    send_key(qcode("nosuch")),
    send_key(qcode(1)),
    send_key(number("x")),
    send_key(number(1.5)),
    send_key(number(18446744073709551615)),
    send_key({"type": "foo", "data": 1}),
    send_key({"type": 1, "data": 1}),
    send_key({"data": 1}),
    send_key({"type": "number"}),
    send_key({"type": "number", "data": 1, "x": 2}),
    send_key(qcode("a"), **{"hold-time": "x"}),
    send_key(qcode("a"), **{"hold-time": 18446744073709551615}),
    {"execute": "send-key", "arguments": {"keys": [1]}},
    {"execute": "send-key", "arguments": {"keys": {}}},
    {"execute": "send-key", "arguments": {"keys": None}},
    {"execute": "send-key", "arguments": {}},
    {"execute": "send-key", "arguments": {"keys": [], "bogus": 1}},
    screendump(filename="{dir}/q.ppm"),
    screendump(filename="{dir}/q.png", format="png"),
    screendump(filename="{dir}/q", format="jpg"),
    screendump(filename="{dir}/q", head=1),
    screendump(filename="{dir}/q", device="nosuch"),
    screendump(filename="{dir}/q", device="nosuch", head=-1),
    screendump(filename="{dir}/q", device="balloon0"),
    screendump(filename="{dir}/q", device="balloon0", head=-1),
    screendump(filename="{dir}/q", device="balloon0", head=4294967297),
    screendump(filename="{dir}/q", head="x"),
    screendump(filename=1),
    screendump(filename="{dir}/q", bogus=1),
    screendump(),
    *(hmp(line) for line in HMP_LINES),
]


def replies(binary: str, directory: Path, machine: list[str]) -> list[str]:
    """The replies of ``binary`` to :data:`REQUESTS` (``{dir}`` is ``directory``, where
    nothing may be written), the directory's name made ``{dir}`` again."""
    requests = [json.dumps(r).replace("{dir}", str(directory)) for r in REQUESTS]
    answers = paused_machine_replies(binary, directory, machine, requests)
    assert set(os.listdir(directory)) <= {"qmp.sock", "state"}, "screendump wrote a file"
    return [answer.replace(str(directory), "{dir}") for answer in answers]


@pytest.mark.parametrize(
    "machine",
    [
        ["-machine", "none"],
        ["-machine", "pc", "-accel", "tcg", "-device", "virtio-balloon-pci,id=balloon0"],
    ],
    ids=["none", "pc"],
)
def test_keys_and_screendump_answer_as_qemu(machine: list[str], short_tmp: Path) -> None:
    answers = []
    for name, binary in (("qemu", QEMU_BINARY), ("ours", STANDIN)):
        (short_tmp / name).mkdir()
        answers.append(replies(binary, short_tmp / name, machine))
    for request, theirs, ours in zip(REQUESTS, *answers, strict=True):
        assert (request, ours) == (request, theirs)


def schema(binary: str, directory: Path) -> list[dict[str, Any]]:
    path = str(directory / f"{Path(binary).name}.sock")
    command = [binary, "-machine", "none", "-display", "none", "-nodefaults"]
    command += ["-qmp", f"unix:{path},server=on,wait=off"]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        with connect_when_listening(path, process) as client:
            (reply,) = qmp_lines(client, ['{"execute": "query-qmp-schema"}'])
    finally:
        process.terminate()
        process.wait(30)
    entries: list[dict[str, Any]] = json.loads(reply)["return"]
    return entries


@pytest.mark.parametrize("command", ["send-key", "screendump"])
def test_schema_entries_are_qemus(command: str, short_tmp: Path) -> None:
    """The arguments' types, down to ``QKeyCode``'s 150 values in QEMU's order."""
    theirs, ours = schema(QEMU_BINARY, short_tmp), schema(STANDIN, short_tmp)
    assert command_shape(ours, command) == command_shape(theirs, command)


PROMPT = b"(qemu) "

# What is typed, and how many prompts its answer ends with (a TAB listing several candidates
# prints the prompt again; each line run prints one).
TYPED: list[tuple[bytes, int]] = [
    (b"sendkey ctrl-alt-f1\t\n", 2),
    (b"sendkey ctrl-alt_\t\n", 1),
    (b"sendkey ctrl-al\t\t\n", 3),
    (b"sendkey a-\t\n", 2),
    (b"sendkey \t\n", 2),
    (b"sendkey 0x1\t\n", 1),
    (b"sendkey kp_\t\n", 2),
]


async def typed_answers(binary: str, directory: Path) -> list[bytes]:
    """What ``binary``'s human monitor on a unix socket writes back for :data:`TYPED`."""
    path = str(directory / "hmp.sock")
    command = [binary, "-machine", "none", "-display", "none", "-nodefaults"]
    command += ["-monitor", f"unix:{path},server=on,wait=off"]
    if binary == STANDIN:
        command += ["--state-dir", str(directory / "state")]
    process = await asyncio.create_subprocess_exec(*command, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(path):
            assert process.returncode is None
            await asyncio.sleep(0.02)
        reader, writer = await asyncio.open_unix_connection(path)
        answers = [await asyncio.wait_for(reader.readuntil(PROMPT), 30)]
        for data, prompts in TYPED:
            writer.write(data)
            answer = b""
            for _ in range(prompts):
                answer += await asyncio.wait_for(reader.readuntil(PROMPT), 30)
            answers.append(answer)
        writer.close()
        await writer.wait_closed()
        return answers
    finally:
        process.terminate()
        await process.wait()


async def test_sendkey_completes_key_names_as_qemu(short_tmp: Path) -> None:
    """QEMU's ``sendkey_completion``: the name after the last ``-`` is completed."""
    (short_tmp / "qemu").mkdir()
    (short_tmp / "ours").mkdir()
    theirs = await typed_answers(QEMU_BINARY, short_tmp / "qemu")
    ours = await typed_answers(STANDIN, short_tmp / "ours")
    for (typed, _), their_answer, our_answer in zip(TYPED, theirs[1:], ours[1:], strict=True):
        assert (typed, our_answer) == (typed, their_answer)
