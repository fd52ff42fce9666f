"""``balloon``/``query-balloon`` (QMP and HMP) against QEMU 7.2: libvirt's default domain has a
``virtio-balloon-pci`` and sets the balloon as it starts it.

Without a balloon device QEMU says ``No balloon device has been activated`` (DeviceNotActive);
with one, a request is taken and nothing changes until the guest's driver moves the balloon,
which a guest that never loaded one (QEMU under ``-S``, the simulated guest) never does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launched_qmp import STANDIN, paused_machine_replies
from qmonitor.testing import QEMU_BINARY

pytestmark = pytest.mark.qemu

REQUESTS = [
    {"execute": "balloon", "arguments": {"value": 32 << 20}},
    {"execute": "query-balloon"},
    {"execute": "balloon", "arguments": {"value": 0}},
    {"execute": "balloon", "arguments": {"value": -1}},
    *(
        {"execute": "human-monitor-command", "arguments": {"command-line": line}}
        for line in ("info balloon", "balloon 32", "balloon 0", "balloon -1", "help balloon")
    ),
    {"execute": "query-balloon"},
]


def replies(binary: str, directory: Path, machine: list[str]) -> list[str]:
    return paused_machine_replies(
        binary, directory, machine, [json.dumps(request) for request in REQUESTS]
    )


@pytest.mark.parametrize(
    "machine",
    [["-machine", "none"], ["-machine", "pc", "-accel", "tcg", "-device", "virtio-balloon-pci"]],
    ids=["none", "balloon"],
)
def test_balloon_answers_as_qemu(machine: list[str], short_tmp: Path) -> None:
    answers = []
    for name, binary in (("qemu", QEMU_BINARY), ("ours", STANDIN)):
        (short_tmp / name).mkdir()
        answers.append(replies(binary, short_tmp / name, machine))
    assert answers[1] == answers[0]
