"""Capability profiles: the file format, lookups, and ``qmonitor profile capture``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qmonitor.machine.profile import (
    LIBVIRT_DEVICE_TYPES,
    PROBE_PLAN,
    Profile,
    ProfileError,
    as_inserted,
    request_key,
)
from qmonitor.qmp.encode import encode_json
from qmonitor.testing import QEMU_BINARY

MINIMAL: dict[str, Any] = {
    "format": "qmonitor-profile",
    "version": 1,
    "qemu": {"binary": "qemu", "version": {}, "accel": "tcg"},
    "probe": {
        "argv": [],
        "replies": [
            {"execute": "query-target", "return": {"arch": "aarch64"}},
            {
                "execute": "device-list-properties",
                "arguments": {"typename": "x"},
                "error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"},
            },
        ],
    },
    "machines": {},
}


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qmonitor", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_replies_are_found_by_command_and_arguments_in_any_member_order() -> None:
    profile = Profile.from_json(MINIMAL, "minimal")
    reply = profile.reply("query-target")
    assert reply is not None and reply.value == {"arch": "aarch64"}
    error = profile.reply("device-list-properties", {"typename": "x"})
    assert error is not None and error.error == {
        "class": "DeviceNotFound",
        "desc": "Device 'x' not found",
    }
    assert profile.reply("device-list-properties", {"typename": "y"}) is None
    assert request_key("c", {"a": 1, "b": {"d": 2, "c": 3}}) == request_key(
        "c", {"b": {"c": 3, "d": 2}, "a": 1}
    )


def test_stored_member_order_is_written_back_byte_for_byte() -> None:
    # QEMU 7.2 wrote these (qom-list-properties memory-backend-file, query-migrate-parameters);
    # our encoder puts members in QDict order, so the insertion order must be reconstructed.
    for text in (
        '{"name": "share", "description": "Mark the memory as private to QEMU or shared", '
        '"type": "bool"}',
        '{"cpu-throttle-tailslow": false, "xbzrle-cache-size": 67108864, "cpu-throttle-initial"'
        ': 20, "announce-max": 550, "decompress-threads": 2, "compress-threads": 8}',
        '[{"default-value": -1, "name": "addr", "description": "Slot", "type": "int32"}]',
        # Two members in one QDict bucket: the one inserted last was written first.
        '{"model": {"name": "base", "props": {"rdpid": false, "arat": true}}}',
    ):
        assert encode_json(as_inserted(json.loads(text))) == text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a qmonitor capability profile"),
        (json.dumps({**MINIMAL, "version": 9}).encode(), "profile format version 9"),
        (json.dumps({**MINIMAL, "probe": {"replies": [{"return": 1}]}}).encode(), "'execute'"),
        (
            json.dumps({**MINIMAL, "probe": {"replies": [{"execute": "x"}]}}).encode(),
            "neither 'return' nor 'error'",
        ),
    ],
)
def test_a_bad_profile_is_one_line_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ProfileError) as caught:
        Profile.file(path).load()
    text = str(caught.value)
    assert message in text and str(path) in text and "\n" not in text


def test_a_missing_profile_says_so() -> None:
    with pytest.raises(ProfileError, match=r"cannot read profile /nonexistent/p\.json: No such"):
        Profile.file("/nonexistent/p.json").load()


def test_the_shipped_profile_answers_libvirts_probe() -> None:
    profile = Profile.default()
    assert profile.qemu["version"]["qemu"] == {"major": 7, "minor": 2, "micro": 22}
    for command, arguments in PROBE_PLAN:
        assert profile.reply(command, arguments) is not None, (command, arguments)
    for device in LIBVIRT_DEVICE_TYPES:
        assert profile.reply("device-list-properties", {"typename": device}) is not None
    assert profile.machine_info("pc") == profile.machine_info("pc-i440fx-7.2")
    assert set(profile.machines) == {"pc-i440fx-7.2", "pc-q35-7.2"}
    assert profile.is_a("virtio-net-pci", "device") and not profile.is_a("iothread", "device")


def test_run_refuses_a_bad_profile_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("[]")
    result = run_cli("run", "--profile", str(path), "-qmp", f"unix:{tmp_path}/s,server=on")
    assert result.returncode == 1
    assert result.stderr == f"qmonitor: {path}: not a qmonitor capability profile\n"


def test_capture_of_a_missing_binary_fails_and_writes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "p.json"
    result = run_cli("profile", "capture", "--qemu", "/nonexistent/qemu", "-o", str(output))
    assert result.returncode == 1
    assert result.stderr.startswith("qmonitor: profile capture: cannot run /nonexistent/qemu:")
    assert result.stderr.count("\n") == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.qemu
def test_capture_writes_a_profile_that_matches_the_shipped_one(tmp_path: Path) -> None:
    output = tmp_path / "p.json"
    output.write_text("the previous profile")
    result = run_cli(
        "profile", "capture", "--qemu", QEMU_BINARY, "-o", str(output), "--machine", "q35"
    )
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == ["p.json"]  # no temporary left behind
    captured = Profile.file(output).load()
    shipped = Profile.default()
    assert set(captured.machines) == {"pc-q35-7.2"}
    # The probe's replies are the shipped ones (the shipped profile comes from this QEMU).
    assert captured.probe.replies.keys() == shipped.probe.replies.keys()
    for key, reply in captured.probe.replies.items():
        assert reply == shipped.probe.replies[key], key
    text = output.read_text()
    assert "QMP-SOCKET" in text and "qmonitor-capture-" not in text


@pytest.mark.qemu
def test_capture_of_an_unknown_machine_type_fails_and_keeps_the_old_file(tmp_path: Path) -> None:
    output = tmp_path / "p.json"
    output.write_text("the previous profile")
    result = run_cli(
        "profile", "capture", "--qemu", QEMU_BINARY, "-o", str(output), "--machine", "nope"
    )
    assert result.returncode == 1
    assert result.stderr == f"qmonitor: profile capture: {QEMU_BINARY} has no machine type 'nope'\n"
    assert output.read_text() == "the previous profile"
    assert os.listdir(tmp_path) == ["p.json"]
