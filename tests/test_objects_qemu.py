"""``-object`` members, checked as QEMU 7.2 checks them: the two programs side by side.

QEMU visits every ``-object`` against its ``ObjectOptions`` variant (qapi/qom.json) as the
option loop reads it (softmmu/vl.c ``object_option_parse``). qmonitor holds those variants in
a table generated from QEMU's schema (src/qmonitor/cmdline/qom_members.py); here the table is
held against what the installed QEMU describes of itself (``query-qmp-schema``), bad options
are given to both programs, which must print the same error and exit 1, and options QEMU
accepts (libvirt's JSON memory backend, iothreads with polling settings...) start both.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qmonitor.cmdline.qapi import UNMODELLED, ListOf, MemberType, StructOf
from qmonitor.cmdline.qom_members import OBJECT_MEMBERS
from qmonitor.testing import QEMU_BINARY, RawQMPClient, start_qemu, start_server

pytestmark = pytest.mark.qemu

PROGRAM = "qemu-system-x86_64"
STANDIN = str(Path(sys.executable).parent / "qmonitor-system-x86_64")
BASE = ["-machine", "none", "-display", "none", "-nodefaults", "-S"]

# --- the table is QEMU's ------------------------------------------------------------------


def _introspected_shape(types: dict[str, dict[str, Any]], name: str) -> object:
    """A schema type as introspection shows it: integer types are all "int" there."""
    entry = types[name]
    meta = entry["meta-type"]
    if meta == "builtin":
        return entry["name"]  # str, bool, number, any; int for every integer type
    if meta == "enum":
        return tuple(entry["values"])
    if meta == "array":
        return [_introspected_shape(types, entry["element-type"])]
    if meta == "object" and "variants" not in entry:
        return {
            member["name"]: (_introspected_shape(types, member["type"]), "default" not in member)
            for member in entry["members"]
        }
    return UNMODELLED


def _table_shape(member_type: MemberType) -> object:
    if isinstance(member_type, ListOf):
        return [_table_shape(member_type.element)]
    if isinstance(member_type, StructOf):
        return {
            name: (_table_shape(kind), required) for name, kind, required in member_type.members
        }
    if isinstance(member_type, tuple) or member_type in ("str", "bool", "number", "any"):
        return member_type
    if member_type == UNMODELLED:
        return UNMODELLED
    return "int"  # int8 ... uint64, size


async def test_the_member_table_is_what_qemu_describes(short_tmp: Path) -> None:
    path = str(short_tmp / "qemu.sock")
    async with start_qemu(path):
        client = await RawQMPClient.connect_unix(path)
        await client.negotiate()
        schema = (await client.execute("query-qmp-schema"))["return"]
        await client.close()
    types = {entry["name"]: entry for entry in schema}
    object_add = next(entry for entry in schema if entry["name"] == "object-add")
    union = types[object_add["arg-type"]]
    assert [member["name"] for member in union["members"]] == ["qom-type", "id"]
    qemu_variants = {
        variant["case"]: _introspected_shape(types, variant["type"])
        for variant in union["variants"]
    }
    ours = {
        qom_type: {name: (_table_shape(kind), required) for name, kind, required in members}
        for qom_type, members in OBJECT_MEMBERS.items()
    }
    # A type without a variant (can-bus...) is listed with no members; it has no entry here.
    assert set(ours) == {qom_type for qom_type, members in qemu_variants.items() if members}
    for qom_type, members in ours.items():
        qemu = qemu_variants[qom_type]
        assert isinstance(qemu, dict)
        assert list(members) == list(qemu), qom_type  # visiting order: bases first
        for name, (shape, required) in members.items():
            qemu_shape, qemu_required = qemu[name]
            assert required == qemu_required, (qom_type, name)
            if shape != UNMODELLED:
                assert shape == qemu_shape, (qom_type, name)


# --- both programs ----------------------------------------------------------------------

REFUSED = [
    "memory-backend-ram,id=m,size=1M,bogus=1",
    '{"qom-type":"memory-backend-ram","id":"m","size":1048576,"bogus":1}',
    "memory-backend-file,id=m,size=1M,mem-path=/tmp,discard-data=maybe",
    '{"qom-type":"memory-backend-memfd","id":"m","size":1048576,"seal":"on"}',
    "memory-backend-ram,id=m,size=1M,policy=sometimes",
    "iothread,id=i,foo=2",
    '{"qom-type":"iothread","id":"i","poll-max-ns":"32768"}',
    "main-loop,id=l,aio-max-batch=lots",
    "secret,id=s,data=x,bogus=1",
    '{"qom-type":"throttle-group","id":"t","limits":{"iops-total":1,"bogus":2}}',
    "rng-random,id=r,filename=/dev/urandom,opened=maybe",
    "thread-context,id=c,cpu-affinity=0-70000",
]


# The last check QEMU makes (a -machine memory-backend= naming no object): a program that
# accepted the option exits there instead of running.
SENTINEL = ["-machine", "memory-backend=zz"]


async def _run(command: list[str]) -> tuple[int | None, str]:
    process = await asyncio.create_subprocess_exec(
        *command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    async with asyncio.timeout(30):
        _, stderr = await process.communicate()
    return process.returncode, stderr.decode()


@pytest.fixture(scope="module")
def refusals() -> dict[str, tuple[tuple[int | None, str], tuple[int | None, str]]]:
    """Each refused option run by QEMU and by the stand-in, all at once."""

    async def run_all() -> list[tuple[tuple[int | None, str], tuple[int | None, str]]]:
        limit = asyncio.Semaphore(4)

        async def both(option: str) -> tuple[tuple[int | None, str], tuple[int | None, str]]:
            async with limit:
                arguments = [*BASE, "-object", option, *SENTINEL]
                qemu, ours = await asyncio.gather(
                    _run([QEMU_BINARY, *arguments]), _run([STANDIN, *arguments])
                )
                return qemu, ours

        return await asyncio.gather(*(both(option) for option in REFUSED))

    return dict(zip(REFUSED, asyncio.run(run_all()), strict=True))


@pytest.mark.parametrize("option", REFUSED)
def test_a_bad_member_gets_qemus_error_from_the_standin(
    refusals: dict[str, tuple[tuple[int | None, str], tuple[int | None, str]]], option: str
) -> None:
    (qemu_status, qemu_says), (our_status, we_say) = refusals[option]
    assert qemu_status == our_status == 1
    assert we_say.replace("qmonitor-system-x86_64", PROGRAM) == qemu_says
    assert qemu_says.startswith(f"{PROGRAM}: -object {option}: ")


ACCEPTED = [
    '{"qom-type":"memory-backend-ram","id":"pc.ram","size":67108864}',  # libvirt 9.0
    "memory-backend-ram,id=m1,size=1M,merge,dump=no,share=yes,prealloc=n,prealloc-threads= 2",
    "memory-backend-ram,id=m2,size=1M,host-nodes=0,host-nodes=0-0,policy=bind",
    '{"qom-type":"memory-backend-memfd","id":"m3","size":1048576,"seal":true,"host-nodes":[0],"policy":"preferred"}',
    "iothread,id=iothread1,poll-max-ns=32768,poll-grow=0,poll-shrink=0",
    '{"qom-type":"iothread","id":"iothread2","poll-max-ns":0,"aio-max-batch":0}',
    "main-loop,id=loop,thread-pool-max=16",
    "secret,id=sec0,data=c2VjcmV0,format=base64",
    '{"qom-type":"throttle-group","id":"t0","limits":{"iops-total":100}}',
    "throttle-group,id=t1,x-iops-total=100",
    "rng-random,id=rng0,filename=/dev/urandom",
    "thread-context,id=tc0,node-affinity=0",
]


@pytest.mark.parametrize("program", [QEMU_BINARY, STANDIN])
async def test_objects_qemu_accepts_start_both(short_tmp: Path, program: str) -> None:
    path = str(short_tmp / "qmp.sock")
    objects = [part for option in ACCEPTED for part in ("-object", option)]
    command = [program, *BASE, "-qmp", f"unix:{path},server=on,wait=off", *objects]
    async with start_server(command, path, startup_timeout=20.0):
        client = await RawQMPClient.connect_unix(path)
        assert client.greeting is not None and "QMP" in client.greeting
        await client.close()
