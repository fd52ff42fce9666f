"""libvirt launches the emulator and drives it, as it drives QEMU (issue 12 item 6).

A private ``libvirtd`` in session mode (tests/clients/libvirt_session.py) probes each emulator
with ``virsh domcapabilities``, then defines a domain with no disks, 64 MiB and TCG, and takes it
through start, suspend, resume, monitor passthrough (QMP and HMP), save, restore, shutdown and
destroy. Every test runs against real QEMU 7.2 and against ``qmonitor-system-x86_64``
(tests/clients/emulators.py).
"""

from __future__ import annotations

import hashlib
import json
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from emulators import EMULATORS, Emulator
from libvirt_session import (
    GUEST_RAM,
    LibvirtSession,
    domain_xml,
    libvirt_session,
    missing_requirement,
)

_missing = missing_requirement()
pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.skipif(_missing is not None, reason=_missing or ""),
    pytest.mark.parametrize("emulator", EMULATORS),
]

STATE_TIMEOUT = 30.0
"""How long a domain may take to reach a state it was sent to: generous, never reached."""


@pytest.fixture(scope="module")
def session() -> Iterator[LibvirtSession]:
    with libvirt_session() as running:
        yield running


@dataclass
class Domain:
    """A defined domain and the virsh commands the tests send it."""

    session: LibvirtSession
    name: str
    emulator: Emulator
    emulator_path: str

    def virsh(self, command: str, *arguments: str) -> str:
        return self.session.virsh(command, self.name, *arguments).stdout

    def state(self) -> str:
        return self.virsh("domstate").strip()

    def wait_for_state(self, wanted: str) -> None:
        """Poll ``virsh domstate`` until it says ``wanted`` (libvirt acts on events later)."""
        deadline = time.monotonic() + STATE_TIMEOUT
        while (state := self.state()) != wanted:
            assert time.monotonic() < deadline, f"{self.name} is {state!r}, not {wanted!r}"
            time.sleep(0.02)

    def qmp(self, command: str, arguments: dict[str, object] | None = None) -> object:
        """A QMP command through ``virsh qemu-monitor-command``: its ``return`` value."""
        message: dict[str, object] = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        reply = json.loads(self.virsh("qemu-monitor-command", json.dumps(message)))
        assert "return" in reply, reply
        return reply["return"]

    def ram_digest(self) -> str:
        """A digest of guest RAM: qmonitor computes one (``x-query-ram-digest``); for QEMU,
        which has no such command, SHA-256 of a ``pmemsave`` dump of all of it."""
        if self.emulator.has_ram_digest:
            result = self.qmp("x-query-ram-digest")
            assert isinstance(result, dict)
            return str(result["digest"])
        dump = self.session.path(f"{self.name}.ram")
        self.qmp("pmemsave", {"val": 0, "size": GUEST_RAM, "filename": str(dump)})
        try:
            return hashlib.sha256(dump.read_bytes()).hexdigest()
        finally:
            dump.unlink()


@pytest.fixture
def domain(session: LibvirtSession, emulator: Emulator, request: pytest.FixtureRequest) -> Domain:
    """A domain named after the test, defined with ``emulator``; gone after the test."""
    path = emulator.require()
    name = request.node.originalname.removeprefix("test_")[:40] + "-" + emulator.id
    xml_file = session.write_file(f"{name}.xml", domain_xml(name, path))
    session.virsh("define", str(xml_file))
    request.addfinalizer(lambda: _remove(session, name))
    return Domain(session, name, emulator, path)


def _remove(session: LibvirtSession, name: str) -> None:
    if name in session.domain_names():
        session.virsh("destroy", name, check=False)
        session.virsh("undefine", name)


def test_domcapabilities_probes_the_emulator(session: LibvirtSession, emulator: Emulator) -> None:
    path = emulator.require()
    result = session.virsh(
        "domcapabilities", "--emulatorbin", path, "--arch", "x86_64", "--virttype", "qemu"
    )
    capabilities = ElementTree.fromstring(result.stdout)
    assert capabilities.findtext("path") == path
    assert capabilities.findtext("domain") == "qemu"
    assert capabilities.findtext("arch") == "x86_64"
    assert capabilities.findtext("machine")  # the default machine type, e.g. pc-i440fx-7.2
    # libvirt keeps what it probed, keyed by the binary, in the session's cache directory.
    cached = [
        ElementTree.parse(entry).getroot() for entry in session.capabilities_cache.glob("*.xml")
    ]
    assert path in [entry.findtext("emulator") for entry in cached]


def test_start_suspend_resume_monitor_destroy(domain: Domain) -> None:
    assert domain.state() == "shut off"
    domain.virsh("start")
    assert domain.state() == "running"
    # libvirt logs the command line it ran: the emulator is the one the domain names.
    assert f"\n{domain.emulator_path} \\\n" in domain.session.domain_log(domain.name).read_text()
    domain.virsh("suspend")
    assert domain.state() == "paused"
    assert domain.qmp("query-status") == {"status": "paused", "singlestep": False, "running": False}
    domain.virsh("resume")
    assert domain.state() == "running"
    assert domain.qmp("query-status") == {"status": "running", "singlestep": False, "running": True}
    assert domain.virsh("qemu-monitor-command", "--hmp", "info status").strip() == (
        "VM status: running"
    )
    domain.virsh("destroy")
    assert domain.state() == "shut off"


def test_save_and_restore_bring_back_the_same_ram(domain: Domain) -> None:
    domain.virsh("start")
    domain.virsh("suspend")
    before = domain.ram_digest()
    image = domain.session.path(f"{domain.name}.save")
    domain.session.virsh("save", domain.name, str(image))
    assert domain.state() == "shut off"
    domain.session.virsh("restore", str(image), "--paused")
    assert domain.state() == "paused"
    assert domain.ram_digest() == before
    domain.virsh("resume")
    assert domain.state() == "running"
    domain.virsh("destroy")
    assert domain.state() == "shut off"


def test_shutdown_then_destroy(domain: Domain) -> None:
    domain.virsh("start")
    domain.virsh("shutdown", "--mode", "acpi")  # libvirt's system_powerdown
    if domain.emulator.guest_acts_on_powerdown:
        domain.wait_for_state("shut off")
    else:
        # Nothing in the guest acts on the ACPI power button: libvirt leaves it running.
        assert domain.state() == "running"
        domain.virsh("destroy")
    assert domain.state() == "shut off"


def test_send_key_and_screenshot(domain: Domain) -> None:
    """``virsh send-key`` (libvirt's ``send-key``, Linux key codes turned into QEMU's) is taken;
    ``virsh screenshot`` of a domain without ``<video>`` is refused by libvirt itself, so the
    emulator is never asked and the error is the same for both."""
    domain.virsh("start")
    domain.virsh("send-key", "KEY_LEFTCTRL", "KEY_LEFTALT", "KEY_F1")
    domain.virsh("send-key", "--holdtime", "50", "--codeset", "linux", "30")
    image = domain.session.path(f"{domain.name}.ppm")
    result = domain.session.virsh("screenshot", domain.name, str(image), check=False)
    assert result.returncode == 1
    assert "no screens to take screenshot from" in result.stderr
    assert not image.exists()
    domain.virsh("destroy")
    assert domain.state() == "shut off"
