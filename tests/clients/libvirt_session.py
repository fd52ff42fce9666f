"""A private ``libvirtd`` in session mode (``qemu:///session``), for tests that let libvirt
launch an emulator and drive it.

Everything lives in one temporary directory that stands in for the session user's HOME and
XDG directories; :func:`libvirt_session` starts the daemon (under subreaper.py, which reaps the
emulators libvirt daemonizes and ends the ``virtlogd`` the daemon spawns), waits for its socket,
and at the end destroys the domains left running, stops the daemon and removes the directory.

Why an unprivileged user: ``libvirtd`` run by root is always the privileged (system) daemon,
whatever XDG variables say (its ``--help`` shows ``/run/libvirt/libvirt-sock`` and
``/etc/libvirt/libvirtd.conf``), and root's ``virsh -c qemu:///session`` connects to
``/var/run/libvirt/libvirt-sock``, i.e. the system daemon. Only a non-root daemon reads
``$XDG_RUNTIME_DIR``/``$XDG_CONFIG_HOME``/``$XDG_CACHE_HOME``. So when the tests run as root,
the daemon and every ``virsh`` run as :data:`SESSION_USER` (``.ci/run`` creates it); when they run
as an ordinary user, as that user.

Where libvirt keeps things under the temporary directory (libvirt 9.0, session mode):

- ``run/libvirt/libvirt-sock``: the daemon's socket (``$XDG_RUNTIME_DIR``);
- ``cache/libvirt/qemu/cache/capabilities/<sha256 of the emulator's path>.xml``: the probed
  capabilities of each emulator binary. The file records what they are valid for, and libvirt
  probes again when one changes: ``<emulator>`` (the path), ``<qemuctime>`` (the binary's
  ctime), ``<qemumoddirmtime>`` (QEMU's module directory), ``<selfctime>`` and ``<selfvers>``
  (``libvirtd``'s own ctime and version). A stand-in rebuilt in place (new ctime) is probed
  again; one whose Python code changes behind an unchanged script is not, within a session,
  which is why each test session starts with an empty cache;
- ``cache/libvirt/qemu/log/<domain>.log``: the emulator's command line and standard error;
- ``config/libvirt/qemu/<domain>.xml``: defined domains; ``config/libvirt/qemu/lib/domain-*``:
  a running domain's monitor socket and master key.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SESSION_USER = os.environ.get("QMONITOR_LIBVIRT_USER", "qmonitor-libvirt")
"""The unprivileged account the session runs as when the tests run as root."""

URI = "qemu:///session"

_SUBREAPER = (Path(__file__).parent / "subreaper.py").read_text()
"""libvirtd runs under subreaper.py (passed as ``-c`` source, so the session user need not
be able to read this checkout), which reaps the emulators libvirt daemonizes as they exit."""

_SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
"""The session user may not reach the interpreter running the tests (a pyenv Python under a
0700 /root, as on CI); Debian's is readable by everyone."""

STARTUP_TIMEOUT = 30.0
"""Generous: the daemon's socket appears within ~0.1 s on an idle machine."""


def missing_requirement() -> str | None:
    """Why a libvirt session cannot run here, or None when it can."""
    for program in ("libvirtd", "virsh"):
        if find_program(program) is None:
            return f"{program} is not installed (Debian: libvirt-daemon, libvirt-clients)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SESSION_USER)
        except KeyError:
            return (
                f"running as root, and libvirt's session mode needs an unprivileged user: "
                f"create {SESSION_USER!r} (useradd --system --no-create-home "
                f"--shell /usr/sbin/nologin {SESSION_USER}; .ci/run does)"
            )
    return None


def find_program(name: str) -> str | None:
    """``name`` on PATH or in /usr/sbin (where Debian puts ``libvirtd``, off users' PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


GUEST_RAM = 64 * 1024 * 1024


def domain_xml(name: str, emulator_path: str) -> str:
    """The smallest domain libvirt starts: TCG, 64 MiB, one vCPU, no disks, no display.

    No USB controller and no memory balloon, which libvirt would otherwise add by default: a
    stand-in need not pretend to have devices the tests never use.
    """
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{GUEST_RAM >> 20}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>{emulator_path}</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


@dataclass(frozen=True)
class Account:
    """Who the session's processes run as."""

    uid: int
    gid: int

    @classmethod
    def for_session(cls) -> Account:
        if os.geteuid() != 0:
            return cls(os.geteuid(), os.getegid())
        entry = pwd.getpwnam(SESSION_USER)
        return cls(entry.pw_uid, entry.pw_gid)

    def process_options(self) -> dict[str, object]:
        """``subprocess`` options that run a child as this account (only root can switch)."""
        if os.geteuid() != 0:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@dataclass
class LibvirtSession:
    """A running session daemon and how to talk to it."""

    root: Path
    account: Account
    env: dict[str, str]
    daemon: subprocess.Popen[bytes]

    @property
    def capabilities_cache(self) -> Path:
        """Where libvirt caches each emulator's probed capabilities (one XML file each)."""
        return self.root / "cache" / "libvirt" / "qemu" / "cache" / "capabilities"

    def domain_log(self, domain: str) -> Path:
        """The emulator's command line and standard error, as libvirt logged them."""
        return self.root / "cache" / "libvirt" / "qemu" / "log" / f"{domain}.log"

    def daemon_log(self) -> str:
        return (self.root / "libvirtd.log").read_text(errors="replace")

    def path(self, name: str) -> Path:
        """A path in the session's directory that the session's processes may create."""
        return self.root / "files" / name

    def write_file(self, name: str, text: str) -> Path:
        """Write ``text`` to :meth:`path` ``(name)``, readable by the session's processes."""
        target = self.path(name)
        target.write_text(text)
        os.chown(target, self.account.uid, self.account.gid)
        return target

    def virsh(
        self, *arguments: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c qemu:///session ARGUMENTS`` as the session user.

        With ``check``, a failure raises AssertionError showing virsh's error and the tail of
        the daemon's log, which is where libvirt says why an emulator was refused.
        """
        command = [find_program("virsh") or "virsh", "-q", "-c", URI, *arguments]
        result = subprocess.run(
            command,
            env=self.env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            **self.account.process_options(),  # type: ignore[call-overload]
        )
        if check and result.returncode != 0:
            log_tail = "\n".join(self.daemon_log().splitlines()[-20:])
            raise AssertionError(
                f"{' '.join(command)} exited {result.returncode}:\n{result.stderr}"
                f"\n--- libvirtd log (tail) ---\n{log_tail}"
            )
        return result

    def domain_names(self) -> list[str]:
        return self.virsh("list", "--all", "--name").stdout.split()


def _session_env(root: Path) -> dict[str, str]:
    """The environment of a login session whose HOME and XDG directories are under ``root``.

    ``LIBVIRT_AUTOSTART=0`` stops ``virsh`` from spawning a daemon of its own (which nothing
    would stop) if ours has died: it fails instead.
    """
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "HOME": str(root),
        "XDG_RUNTIME_DIR": str(root / "run"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_STATE_HOME": str(root / "state"),
        "LIBVIRT_AUTOSTART": "0",
    }


def _wait_for_socket(daemon: subprocess.Popen[bytes], socket: Path, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not socket.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"libvirtd did not start: {log.read_text(errors='replace')}")
        time.sleep(0.01)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _kill_from_pidfiles(root: Path, account: Account) -> None:
    """The safety net, for when the daemon had to be killed with its subreaper: kill what
    libvirt's pidfiles under ``root`` still name (the daemon, ``virtlogd``, emulators), if
    owned by the session's account."""
    for pidfile in root.rglob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().strip())
            if os.stat(f"/proc/{pid}").st_uid == account.uid:
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def libvirt_session() -> Iterator[LibvirtSession]:
    """Start a session ``libvirtd`` under a fresh temporary HOME; stop and remove it all after."""
    account = Account.for_session()
    root = Path(tempfile.mkdtemp(prefix="qm-lv-"))
    try:
        (root / "files").mkdir()
        for directory in (root, root / "files"):
            os.chown(directory, account.uid, account.gid)
        env = _session_env(root)
        log = root / "libvirtd.log"
        with open(log, "wb") as log_file:
            daemon = subprocess.Popen(
                [_SYSTEM_PYTHON, "-c", _SUBREAPER, find_program("libvirtd") or "libvirtd"],
                env=env,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                **account.process_options(),  # type: ignore[call-overload]
            )
        try:
            _wait_for_socket(daemon, root / "run" / "libvirt" / "libvirt-sock", log)
            session = LibvirtSession(root, account, env, daemon)
            try:
                yield session
            finally:
                _destroy_all(session)
        finally:
            _stop(daemon)
            _kill_from_pidfiles(root, account)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _destroy_all(session: LibvirtSession) -> None:
    """Destroy and undefine every domain a test left behind (a failed test's, typically)."""
    if session.daemon.poll() is not None:
        return
    for name in session.domain_names():
        session.virsh("destroy", name, check=False)
        session.virsh("undefine", name, check=False)
