"""Differential tests: QEMU 7.2 and qmonitor.cmdline given the same command lines.

For each bad command line, the real ``qemu-system-x86_64`` runs (exiting at once, as it refuses
it) and everything it prints on standard error must be what ``CommandLineError.render()``
gives, byte for byte: warnings, the error with QEMU's location in front, hint lines. QEMU's
"qemu: module ... not found" lines (display modules the Debian package leaves out) are not
ours to print and are dropped; a timestamp (``-msg timestamp=on``) is masked. Lines ending in
``-version`` check the warnings QEMU prints before it stops.

The command lines QEMU's launchers use (libvirt's probe and domain start, QEMUMachine's two
forms) are started for real and must reach the QMP greeting, and parse here.

All QEMU runs of the module happen at once, in parallel, in a module fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from qmonitor.cmdline import CommandLineError, parse_command_line
from qmonitor.testing import QEMU_BINARY
from test_cmdline import LIBVIRT_DOMAIN, LIBVIRT_PROBE, QEMU_MACHINE_FD, QEMU_MACHINE_PATH

pytestmark = pytest.mark.qemu

PROGRAM = "qemu-system-x86_64"
RUN_TIMEOUT = 20.0  # a case that has not exited by then is being run by QEMU, not refused
GREETING_TIMEOUT = 20.0
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ", re.MULTILINE)
_NOISE = re.compile(r"^qemu: module .* not found.*\n", re.MULTILINE)
QUIET = "-display none -nodefaults"  # for cases refused after the option loop

# Command lines QEMU refuses ({tmp} is a private directory), grouped by where QEMU refuses them.
REFUSED = [
    # the first pass: option names and arguments
    "-xyz",
    "--xyz",
    "-",
    "--",
    "-m",
    "--m",
    "-m=64",
    "-qmp-pretty",
    "-m 64x -xyz",
    "-version -xyz",
    "-machine none -mach none",
    # options for other targets
    "-g 800x600",
    "-semihosting",
    # QemuOpts values
    "-m 64x",
    "-m -1",
    "-m 1.5",
    "-m 1e3",
    "-m 99999999999999999999",
    "-m 16E",
    "-m size=64M,foo=1",
    "-m 64,slots=x",
    "-m 64,slots=99999999999999999999",
    "-name guest=a,debug-threads=maybe",
    "-name guest=a,bogus=1",
    "-name ,a",
    "-name a=b",
    "-name guest=a,id=b",
    "-overcommit mem-lock=x",
    "-overcommit bogus",
    "-msg timestamp=on,x=1",
    "-rtc x=1",
    "-uuid abc",
    "-uuid 12345678-1234-1234-1234-12345678901g",
    "-global bogus",
    "-global driver=a,property=b",
    "-chardev socket,id=1x,path={tmp}/c",
    "-chardev socket,id=x,path={tmp}/c1 -chardev socket,id=x,path={tmp}/c2",
    "-chardev socket,id=x,bogus=1",
    "-chardev socket,id=x,server=maybe",
    "-mon chardev=c,bogus=1",
    "-mon c,pretty=x",
    "-sandbox on,bogus=1",
    "-sandbox x",
    "-device e1000,id=1x",
    "-device e1000,id=a -device e1000,id=a",
    "-msg timestamp=on -m 64x",
    # keyval values
    "-smp 1,,2",
    "-smp 1,foo",
    "-smp cpus=2,cpus.x=1",
    "-machine none,a.b=1,a=2",
    "-machine none,a.1=x",
    "-machine none,0=x",
    "-machine ,",
    "-boot strict=on,order",
    # JSON and QAPI values
    "-object memory-backend-ram",
    "-object memory-backend-ram,id=r",
    "-object id=r",
    "-object nope,id=r",
    "-object memory-backend-ram,id=r,size=1x",
    "-object memory-backend-ram,id=1r,size=1M",
    "-object {",
    '-object \'{"qom-type":"memory-backend-ram"\'',
    "-object {}x",
    '-object \'{"id":"x"}\'',
    '-object \'{"qom-type":"nope","id":"x"}\'',
    '-object \'{"qom-type":1,"id":"x"}\'',
    '-object \'{"qom-type":"secret","id":1}\'',
    '-object \'{"qom-type":"memory-backend-ram","id":"r","size":"1M"}\'',
    '-object \'{"qom-type":"memory-backend-ram","id":"r"}\'',
    # -object members beyond the base ones: qapi/qom.json ObjectOptions, as QEMU visits it
    "-object memory-backend-ram,id=m,size=1M,bogus=1",
    "-object iothread,id=i,foo=2",
    '-object \'{"qom-type":"memory-backend-ram","id":"m","size":1048576,"bogus":1}\'',
    "-object memory-backend-ram,id=m,size=1M,zz=1,aa=2,bogus=1",
    "-object memory-backend-ram,id=m,size=1M,policy=foo",
    "-object memory-backend-ram,id=m,size=1M,prealloc=maybe",
    "-object iothread,id=i,poll-max-ns=x",
    "-object iothread,id=i,poll-max-ns=0x10,poll-grow=1k",
    "-object memory-backend-ram,id=m,size=1M,prealloc-threads=-1",
    "-object memory-backend-ram,id=m,size=1M,prealloc-threads=5000000000",
    "-object main-loop,id=ml,foo=1",
    "-object secret,id=s,data=x,format=bad",
    "-object throttle-group,id=t,x-iops-total=5,limits=3",
    "-object throttle-group,id=t,limits=3,iops-total=x",
    "-object rng-random,id=r,filename=/dev/urandom,bad=1",
    "-object memory-backend-file,id=m,size=1M",
    "-object memory-backend-memfd,id=m,size=1M,hugetlb=on,seal=maybe",
    "-object memory-backend-ram,id=m,size=1M,host-nodes=70000",
    "-object memory-backend-ram,id=m,size=1M,host-nodes=65535-65537",
    "-object memory-backend-ram,id=m,size=1M,host-nodes=x",
    "-object memory-backend-ram,id=m,size=1M,host-nodes=3-1",
    "-object memory-backend-ram,id=m,size=1M,host-nodes=-1",
    "-object memory-backend-ram,id=m,size=1M,host-nodes=0-70000",
    "-object thread-context,id=tc,cpu-affinity=0-100000",
    '-object \'{"qom-type":"memory-backend-ram","id":"m","size":1048576,"host-nodes":[70000]}\'',
    '-object \'{"qom-type":"memory-backend-ram","id":"m","size":1048576,"host-nodes":["a"]}\'',
    '-object \'{"qom-type":"memory-backend-ram","id":"m","size":1048576,"host-nodes":5}\'',
    '-object \'{"qom-type":"memory-backend-ram","id":"m","size":1048576,"prealloc":"on"}\'',
    '-object \'{"qom-type":"memory-backend-ram","id":"m","size":1048576,"prealloc-threads":-1}\'',
    '-object \'{"qom-type":"memory-backend-ram","id":"m","size":1048576,"prealloc-threads":1.5}\'',
    '-object \'{"qom-type":"memory-backend-ram","id":"m","size":1048576,"policy":"x"}\'',
    '-object \'{"qom-type":"memory-backend-ram","id":"m","size":1048576,"policy":1}\'',
    '-object \'{"qom-type":"iothread","id":"i","poll-max-ns":"1"}\'',
    '-object \'{"qom-type":"iothread","id":"i","poll-max-ns":1.0}\'',
    '-object \'{"qom-type":"iothread","id":"i","poll-max-ns":9223372036854775808}\'',
    '-object \'{"qom-type":"iothread","id":"i","zz":1,"aa":2,"bogus":3}\'',
    '-object \'{"qom-type":"throttle-group","id":"t","limits":{"iops-total":"x"}}\'',
    '-object \'{"qom-type":"throttle-group","id":"t","limits":{"bogus":1}}\'',
    '-object \'{"qom-type":"throttle-group","id":"t","limits":5}\'',
    '-object \'{"qom-type":"secret","id":"s","data":"x","bogus":1}\'',
    '-object \'{"qom-type":"secret_keyring","id":"s","serial":4294967296}\'',
    "-object secret_keyring,id=s,serial=4294967296",
    "-object secret_keyring,id=s",
    "-object sev-guest,id=s",
    '-object \'{"qom-type":"main-loop","id":"m","aio-max-batch":"x"}\'',
    "-object can-bus,id=c,x=1",
    "-object pef-guest,id=c,x=1",
    "-object filter-buffer,id=f,netdev=n,interval=1,queue=bad",
    "-object colo-compare,id=c",
    "-object input-linux,id=i,evdev=/dev/null,grab-toggle=bad",
    "-object memory-backend-ram,id=m,size=1M,size=2x",
    "-object memory-backend-ram,id=m,size=1M,bogus=1,zz=3,aa=1,b=2,c=3,d=4,e=5,f=6",
    '-object \'{"qom-type":"memory-backend-ram","id":"m","size":1,"zz":3,"aa":1,"b":2,"c":3}\'',
    "-object iothread,id=i,poll-max-ns=99999999999999999999",
    "-object tls-creds-anon,id=t,endpoint=bogus",
    "-object tls-creds-anon,id=t,verify-peer=maybe,x=1",
    "-object tls-creds-psk,id=t,username=u,foo=1",
    '-object \'{"qom-type":"tls-creds-psk","id":"t","username":1}\'',
    "-object x-remote-object,id=x",
    "-object cryptodev-backend,id=c,queues=x",
    "-object cryptodev-backend-builtin,id=c,queues=4294967296",
    "-object dbus-vmstate,id=d",
    "-object rng-egd,id=r",
    "-object rng-builtin,id=r,opened=x",
    "-object memory-backend-file,id=m,size=1M,mem-path=/tmp,align=1x",
    "-object memory-backend-epc,id=m,size=1M,foo=1",
    "-object thread-context,id=tc,node-affinity=a",
    "-object filter-dump,id=f,netdev=n,file=f,maxlen=-1",
    "-object input-barrier,id=i,name=n,x=1",
    "-object qtest,id=q",
    "-object pr-manager-helper,id=p",
    "-object iothread,id=i,aa=1,bb=2,cc=3,dd=4,ee=5,ff=6,gg=7,hh=8,ii=9,jj=10,kk=11,ll=12,mm=13"
    ",poll-max-ns=1,poll-grow=2,poll-shrink=3,aio-max-batch=4",
    '-object \'{"qom-type":"iothread","id":"i","aa":1,"bb":2,"cc":3,"dd":4,"ee":5,"ff":6,"gg":7,'
    '"hh":8,"ii":9,"jj":10,"kk":11,"ll":12,"mm":13,"poll-max-ns":1,"poll-grow":2,"poll-shrink":3,'
    '"aio-max-batch":4}\'',
    '-object \'{"qom-type":"iothread","id":"i","poll-max-ns":1,"poll-grow":2,"poll-shrink":3,'
    '"aio-max-batch":4,"thread-pool-min":1,"thread-pool-max":2,"zz":1}\'',
    "-object memory-backend-ram,id=m,size=1M,merge=on,dump=on,prealloc=on,share=on,reserve=on"
    ",policy=default,prealloc-threads=1,x-use-canonical-path-for-ramblock-id=on,qq=1",
    "-object '{\"a\":1,}'",
    "-object '{\"a'",
    "-object '{1:2}'",
    "-object '{\"a\":-'",
    "-object [1]",
    "-display bogus",
    "-display cocoa",
    "-display none,foo=1",
    '-display \'{"type":"none","x":1}\'',
    "-display gl=on",
    "-display vnc",
    "-display none,full-screen=x",
    '-display \'{"type":"none","full-screen":"x"}\'',
    "-audiodev none",
    "-audiodev bogus",
    '-audiodev \'{"id":1,"driver":"none"}\'',
    '-audiodev \'{"id":"a"}\'',
    "-audiodev id=a,driver=bogus",
    "-audiodev none,id=a,help",
    # -qmp and -monitor addresses
    "-qmp none",
    "-qmp bogus",
    "-qmp unix:{tmp}/q,server=on,bogus=1",
    "-qmp unix:",
    "-qmp tcp:localhost",
    "-qmp tcp::,server=on",
    "-qmp chardev:nope",
    "-chardev null,id=compat_monitor0 -qmp stdio",
    "-mon null,id=compat_monitor0 -qmp stdio",
    "-qmp chardev:1x",
    # after the option loop
    f"{QUIET} -machine none -smp 2",
    f"{QUIET} -smp 2,sockets=3",
    f"{QUIET} -smp cpus=2,foo=1",
    f"{QUIET} -smp -1",
    f"{QUIET} -smp 4,maxcpus=2",
    f"{QUIET} -machine q35 -smp 300",
    f"{QUIET} -machine none -smp 1,dies=2",
    f"{QUIET} -machine bogus",
    f"{QUIET} -machine none -rtc base=bogus",
    f"{QUIET} -machine none -rtc base",
    f"{QUIET} -machine none -rtc clock=x",
    f"{QUIET} -machine none -rtc driftfix=x",
    f"{QUIET} -machine none -sandbox on,obsolete=x",
    f"{QUIET} -machine none -m 64,slots=2",
    f"{QUIET} -machine none -m 64,maxmem=32M",
    f"{QUIET} -machine none -m 64,slots=2,maxmem=64M",
    f"{QUIET} -machine none -accel bogus",
    f"{QUIET} -machine none,accel=bogus",
    f"{QUIET} -machine none -accel tcg -machine accel=tcg",
    f"{QUIET} -machine none -chardev socket",
    f"{QUIET} -machine none -chardev socket,id=x",
    f"{QUIET} -machine none -chardev socket,id=x,path={{tmp}}/a,host=h",
    f"{QUIET} -machine none -chardev socket,id=x,host=h",
    f"{QUIET} -machine none -chardev nope,id=x",
    f"{QUIET} -machine none -chardev id=x",
    f"{QUIET} -machine none -chardev socket,id=c,path={{tmp}}/w,wait=off",
    f"{QUIET} -machine none -chardev socket,id=c,fd=abc,server=on,wait=off",
    f"{QUIET} -machine none -chardev socket,id=c,fd=1x",
    f"{QUIET} -machine none -chardev socket,id=c,fd=99999999999,server=on,wait=off",
    f"{QUIET} -machine none -chardev socket,id=c,fd=3,reconnect=1",
    f"{QUIET} -machine none -chardev socket,id=c,path={{tmp}}/d,delay=on,nodelay=on",
    f"{QUIET} -machine none -chardev socket,id=c,path={{tmp}}/t,server=on,wait=off,tls-creds=t",
    f"{QUIET} -machine none -object secret,id=t,data=x"
    " -chardev socket,id=c,host=127.0.0.1,port=0,server=on,wait=off,tls-creds=t",
    f"{QUIET} -machine none -object tls-creds-anon,id=t"
    " -chardev socket,id=c,host=127.0.0.1,port=0,server=on,wait=off,tls-creds=t",
    f"{QUIET} -machine none -object tls-creds-anon,id=t,endpoint=server"
    " -chardev socket,id=c,path={{tmp}}/u,server=on,wait=off,tls-creds=t",
    f"{QUIET} -machine none -chardev socket,id=c,path={{tmp}}/v,server=on,wait=off,tls-authz=a",
    f"{QUIET} -machine none -qmp tcp:127.0.0.1:0,server=on,wait=off,reconnect=1",
    f"{QUIET} -machine none -chardev socket,id=c,host=127.0.0.1,port=0,websocket=on",
    f"{QUIET} -machine none -chardev tty,id=c,path=/dev/null -chardev socket,id=c2",
    f"{QUIET} -machine none -mon chardev=nope",
    f"{QUIET} -machine none -mon mode=control",
    f"{QUIET} -machine none -chardev socket,id=c,path={{tmp}}/m,server=on,wait=off"
    " -mon c,mode=bogus",
    f"{QUIET} -machine none -chardev socket,id=c,path={{tmp}}/p,server=on,wait=off"
    " -mon c,mode=readline,pretty=on",
    f"{QUIET} -machine none -machine memory-backend=nope",
    f"{QUIET} -machine none -chardev file,id=f",
    f"{QUIET} -machine none -chardev pipe,id=p",
    f"{QUIET} -machine none -chardev ringbuf,id=r,size=1000",
    f"{QUIET} -machine none -chardev memory,id=r,size=3G",
    f"{QUIET} -machine none -chardev ringbuf,id=r,size=2G",
    f"{QUIET} -machine none -serial bogus",
    f"{QUIET} -machine none -serial tcp:",
    f"{QUIET} -machine none -serial null -serial vc:1x",
    f"{QUIET} -machine none -parallel none -parallel null -parallel null -parallel null"
    " -parallel file:{{tmp}}/p",
    f"{QUIET} -machine none -chardev null,id=serial1 -serial none -serial null",
    f"{QUIET} -machine none -serial stdio -monitor stdio",
    f"{QUIET} -machine none -chardev stdio,id=a -chardev stdio,id=b",
    f"{QUIET} -machine none -qmp stdio -monitor stdio",
    f"{QUIET} -machine none -monitor stdio -daemonize",
]

# Command lines QEMU reads up to -version: what it prints on the way (rc 0).
VERSION = [
    "-version",
    "-chardev socket,id=x,path={tmp}/x,server,nowait -version",
    "-qmp unix:{tmp}/y,server,nowait -version",
    "-monitor nonesuch -version",
    "-m 0x40K -version",
    "-msg timestamp -version",
    "-name guest=x,debug-threads -version",
    "-chardev socket,id=c,path={tmp}/z,nodelay,noserver -version",
]


# Random arguments for the options read in the option loop, each followed by -version (so QEMU
# stops before doing anything with them): the parsers against QEMU's on text nobody chose. The
# pieces lean toward what the syntaxes care about; "help" cannot be formed (QEMU would print
# a help text, a named limit here) and neither can "vnc".
_FUZZED_OPTIONS = {
    "m": ["size", "maxmem", "slots", "0x", "1.5", "k", "M", "G", "E", "-", " "],
    "name": ["guest", "process", "debug-threads", "no", "on", "off", "id"],
    "smp": ["cpus", "sockets", "cores", "threads", "maxcpus", "0", "1", "2"],
    "machine": ["type", "none", "pc", "accel", "tcg", "mem", "a.b", "a.0", "a.1"],
    "boot": ["order", "strict", "menu", "on", "c"],
    "object": ["qom-type", "memory-backend-ram", "secret", "id", "size", '{"', '":', "1M"],
    "chardev": ["socket", "id", "path", "server", "wait", "fd", "host", "port", "null"],
    "mon": ["chardev", "mode", "control", "readline", "pretty", "id"],
    "qmp": ["unix:", "tcp:", "stdio", "server", "nowait", "wait", "chardev:", "mon:"],
    "display": ["none", "type", "gl", "on", "gtk", "full-screen", '{"', '":'],
    "audiodev": ["none", "id", "driver", "wav", "timer-period", '{"', '":'],
    "global": ["driver", "property", "value", "a.b", "x"],
    "overcommit": ["mem-lock", "cpu-pm", "on", "off", "no"],
    "msg": ["timestamp", "guest-name", "on", "off"],
    "rtc": ["base", "clock", "driftfix", "utc", "slew"],
    "sandbox": ["on", "off", "enable", "obsolete", "deny", "spawn"],
    "device": ["driver", "e1000", "id", "bus", '{"', '":'],
    "uuid": ["0123", "abcd", "-", "0000-0000", "c7a5fdbd-edaf-9455-926a-d65c16db1809"],
}
_FUZZ_PUNCTUATION = list(",,,==.:{}\"'-_ 0123456789xyz")
FUZZ_PER_OPTION = 4


def _fuzzed_cases() -> list[list[str]]:
    chooser = random.Random(72)  # fixed: the same cases every run
    cases = []
    for option, words in _FUZZED_OPTIONS.items():
        for _ in range(FUZZ_PER_OPTION):
            pieces = chooser.choices(words + _FUZZ_PUNCTUATION, k=chooser.randint(1, 8))
            cases.append([f"-{option}", "".join(pieces), "-version"])
    return cases


FUZZED = [shlex.join(argv) for argv in _fuzzed_cases()]

# Random values for what QEMU checks after the option loop (memory, CPU topology, RTC,
# chardevs, monitors). A valid value runs into the sentinel, the last check QEMU makes
# (-machine memory-backend= naming no object), so that QEMU exits either way.
_LATE_FUZZED_OPTIONS = {
    "m": ["size", "maxmem", "slots", "0x", "1.5", "k", "M", "G", "1", "64", "128", "-"],
    "smp": ["cpus", "sockets", "cores", "threads", "maxcpus", "dies", "0", "1", "2", "4", "-1"],
    "rtc": ["base", "clock", "driftfix", "utc", "localtime", "slew", "rt", "2006", "-06", "T1:"],
    "chardev": ["socket", "id", "c", "path", "server", "wait", "fd", "on", "off", "reconnect"],
    "mon": ["chardev", "c", "n", "mode", "control", "readline", "pretty", "id", "on", "off"],
}
_LATE_BASE = f"{QUIET} -S -chardev null,id=n"
_SENTINEL = "-machine memory-backend=zz"


def _late_fuzzed_cases() -> list[str]:
    chooser = random.Random(7)
    cases = []
    for option, words in _LATE_FUZZED_OPTIONS.items():
        for machine in ("none", "pc", "none", "pc-i440fx-6.1"):
            pieces = chooser.choices(words + _FUZZ_PUNCTUATION, k=chooser.randint(1, 8))
            argument = shlex.quote("".join(pieces))
            cases.append(f"{_LATE_BASE} -machine {machine} -{option} {argument} {_SENTINEL}")
    return cases


FUZZED += _late_fuzzed_cases()

# Random members for -object types, in both forms, each followed by -version: the variant
# members QEMU visits (qapi/qom.json), their types, and which of several unknown members it
# names first (its GHashTable order).
_OBJECT_TYPES = [
    "memory-backend-ram",
    "memory-backend-file",
    "memory-backend-memfd",
    "iothread",
    "main-loop",
    "secret",
    "throttle-group",
    "rng-random",
    "thread-context",
    "cryptodev-backend",
    "filter-buffer",
    "sev-guest",
    "tls-creds-anon",
]
_OBJECT_KEYS = [
    "size",
    "host-nodes",
    "policy",
    "prealloc",
    "prealloc-threads",
    "share",
    "merge",
    "mem-path",
    "seal",
    "hugetlbsize",
    "poll-max-ns",
    "poll-grow",
    "aio-max-batch",
    "thread-pool-max",
    "data",
    "format",
    "keyid",
    "limits",
    "iops-total",
    "x-iops-total",
    "filename",
    "opened",
    "cpu-affinity",
    "node-affinity",
    "queues",
    "netdev",
    "interval",
    "queue",
    "reduced-phys-bits",
    "cbitpos",
    "endpoint",
    "verify-peer",
    "bogus",
    "zz",
    "a",
]
_OBJECT_TEXTS = ["1", "0", "-1", "1M", "1x", "on", "maybe", "0-3", "3-1", "0x10", "bind", "raw"]
_OBJECT_TEXTS += ["65536", "4294967296", "", " 2", "18446744073709551615", "9223372036854775808"]
_OBJECT_VALUES: list[object] = [1, -1, 1.5, True, "1M", "on", None, [0, 1], [70000], ["a"]]
_OBJECT_VALUES += [{"iops-total": 1}, {"x": 1}, "bind", 18446744073709551615, 4294967296]


def _object_fuzzed_cases() -> list[str]:
    chooser = random.Random(12)
    cases = []
    for index in range(40):
        qom_type = chooser.choice(_OBJECT_TYPES)
        keys = chooser.choices(_OBJECT_KEYS, k=chooser.randint(1, 12))
        if index % 2:
            members = {key: chooser.choice(_OBJECT_VALUES) for key in keys}
            value = json.dumps({"qom-type": qom_type, "id": "o", **members})
        else:
            value = ",".join(
                [qom_type, "id=o", *(f"{k}={chooser.choice(_OBJECT_TEXTS)}" for k in keys)]
            )
        cases.append(shlex.join(["-object", value, "-version"]))
    return cases


FUZZED += _object_fuzzed_cases()


def _argv(case: str, tmp: str) -> list[str]:
    return shlex.split(case.replace("{tmp}", tmp))


async def _run_qemu(argv: Sequence[str], cwd: str) -> tuple[int | None, str]:
    process = await asyncio.create_subprocess_exec(
        QEMU_BINARY,
        *argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            _, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        _, stderr = await process.communicate()
        return None, stderr.decode(errors="replace")
    return process.returncode, stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def qemu_outputs() -> Iterator[Outputs]:
    """(private directory, case -> (QEMU's exit status, its stderr)) for every case, run once."""
    with tempfile.TemporaryDirectory(prefix="qm-cl-") as tmp:

        async def run_all() -> list[tuple[int | None, str]]:
            limit = asyncio.Semaphore(4)

            async def run(case: str) -> tuple[int | None, str]:
                case_dir = _case_dir(tmp, case)
                case_dir.mkdir()
                async with limit:
                    return await _run_qemu(_argv(case, str(case_dir)), str(case_dir))

            return await asyncio.gather(*(run(case) for case in CASES))

        results = asyncio.run(run_all())
        yield tmp, dict(zip(CASES, results, strict=True))


CASES = [*REFUSED, *VERSION, *FUZZED]
Outputs = tuple[str, dict[str, tuple[int | None, str]]]


def _case_dir(tmp: str, case: str) -> Path:
    """Each case gets its own directory for the sockets it names ({tmp})."""
    return Path(tmp) / f"case{CASES.index(case)}"


def _qemu_says(qemu_outputs: Outputs, case: str) -> tuple[str, int | None, str]:
    """(the case's directory, QEMU's exit status, its stderr without noise or timestamps)."""
    tmp, outputs = qemu_outputs
    status, stderr = outputs[case]
    stderr = _TIMESTAMP.sub("T ", _NOISE.sub("", stderr))
    return str(_case_dir(tmp, case)), status, stderr


@pytest.mark.parametrize("case", REFUSED)
def test_refused_command_line_gets_qemus_error(qemu_outputs: Outputs, case: str) -> None:
    case_dir, status, qemu_stderr = _qemu_says(qemu_outputs, case)
    assert status == 1, f"QEMU did not refuse {case!r}: {status} {qemu_stderr!r}"
    with pytest.raises(CommandLineError) as caught:
        parse_command_line(_argv(case, case_dir))
    assert caught.value.render(PROGRAM, "T") == qemu_stderr


@pytest.mark.parametrize("case", VERSION)
def test_version_after_options_prints_qemus_warnings(qemu_outputs: Outputs, case: str) -> None:
    case_dir, status, qemu_stderr = _qemu_says(qemu_outputs, case)
    assert status == 0, qemu_stderr
    command_line = parse_command_line(_argv(case, case_dir))
    assert command_line.version
    assert "".join(report.render(PROGRAM, "T") for report in command_line.reports) == qemu_stderr


@pytest.mark.parametrize("case", FUZZED)
def test_random_option_values_get_qemus_answer(qemu_outputs: Outputs, case: str) -> None:
    case_dir, status, qemu_stderr = _qemu_says(qemu_outputs, case)
    try:
        command_line = parse_command_line(_argv(case, case_dir))
    except CommandLineError as error:
        assert (1, error.render(PROGRAM, "T")) == (status, qemu_stderr)
    else:
        ours = "".join(report.render(PROGRAM, "T") for report in command_line.reports)
        assert (0, ours) == (status, qemu_stderr)


# -- the launchers' command lines, started for real -------------------------------------------


def _read_greeting(connection: socket.socket) -> bytes:
    connection.settimeout(GREETING_TIMEOUT)
    data = b""
    while b"\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def _qemu(argv: Sequence[str], pass_fds: Sequence[int] = ()) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [QEMU_BINARY, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=pass_fds,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_libvirt_probe_line_is_accepted_by_both(short_tmp: Path) -> None:
    argv = shlex.split(LIBVIRT_PROBE.replace("/run/", f"{short_tmp}/"))
    parse_command_line(argv)
    parent = subprocess.run(
        [QEMU_BINARY, *argv], capture_output=True, timeout=GREETING_TIMEOUT, check=False
    )
    assert parent.returncode == 0, parent.stderr  # the parent exits once the daemon is ready
    daemon = int((short_tmp / "probe.pid").read_text())
    try:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(short_tmp / "probe.sock"))
            assert b'"QMP"' in _read_greeting(connection)
    finally:
        os.kill(daemon, signal.SIGKILL)


def test_qemu_machine_path_line_is_accepted_by_both(short_tmp: Path) -> None:
    path = short_tmp / "qemu-machine.sock"
    argv = shlex.split(QEMU_MACHINE_PATH.replace("/tmp/qemu-machine.sock", str(path)))
    parse_command_line(argv)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen(1)
        listener.settimeout(GREETING_TIMEOUT)
        with _qemu([*argv, "-machine", "none"]):
            connection, _ = listener.accept()
            with connection:
                assert b'"QMP"' in _read_greeting(connection)


def test_qemu_machine_socketpair_line_is_accepted_by_both() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        argv = shlex.split(QEMU_MACHINE_FD.replace("fd=5", f"fd={theirs.fileno()}"))
        parse_command_line(argv)
        with _qemu([*argv, "-machine", "none"], pass_fds=[theirs.fileno()]):
            assert b'"QMP"' in _read_greeting(ours)


def test_libvirt_domain_line_is_accepted_by_both(short_tmp: Path) -> None:
    key = short_tmp / "master-key.aes"
    key.write_bytes(bytes(32))
    path = short_tmp / "monitor.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen(1)
        argv = [
            argument.replace(
                "/var/lib/libvirt/qemu/domain-1-test/master-key.aes", str(key)
            ).replace("fd=24", f"fd={listener.fileno()}")
            for argument in LIBVIRT_DOMAIN
        ]
        parse_command_line(argv)
        with _qemu(argv, pass_fds=[listener.fileno()]), socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(path))
            assert b'"QMP"' in _read_greeting(connection)
