"""``qmonitor run`` and ``qmonitor-system-x86_64``: the machine and its monitors, for as long as
it lives.

The command lines (:mod:`qmonitor.cli`, :mod:`qmonitor.launch`) only parse, into a
:class:`RunPlan`; this starts the machine, registers its commands on a monitor, serves the
monitors asked for and runs until the machine goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

from qmonitor import (
    Address,
    AddressError,
    AddressInUse,
    FaultRuleError,
    FaultSet,
    Monitor,
    QMonitorError,
    QMPError,
    Record,
    insecure_tcp_error,
    install_faults,
    parse_faults,
    register_human_monitor_command,
)
from qmonitor.machine.config import MachineConfig, SimpleChardev
from qmonitor.machine.machine import Machine
from qmonitor.machine.paths import PathConfinement
from qmonitor.machine.statedir import reclaim_temporaries

if TYPE_CHECKING:
    import ssl

    from qmonitor import Admit, OpenedBackend
    from qmonitor.machine.commands import MachineServices
    from qmonitor.machine.profile import Profile

DEFAULT_DIRTY_RATE: Final = 16 << 20
"""``qmonitor run``'s guest workload by default: 16 MiB/s writes all of a default 128 MiB RAM in
8 s, so a ``savevm`` soon has real data to save, and a migration under the default 128 MiB/s
``max-bandwidth`` still converges. ``--dirty-rate 0`` gives an idle guest, which is
``qmonitor-system-x86_64``'s default: it is launched for every probe and every test, where a
busy guest would only cost CPU."""


class MonitorPlan(Record):
    """One monitor to serve: QMP (``control``) or human (``readline``) on ``address``.

       ``label`` is its chardev's id (``None``: ``compat_monitorN`` in serving order). An address
       of ``None`` is a chardev with no I/O here (``null``, ``vc``, ``pty``...): counted, not
       served. ``interactive`` asks for the console on a terminal (``qmonitor run``'s).
       ``wait_location``, for a listening socket with ``wait=on``: the option that made it, as
       typed; start-up then waits for a first client before going on, as QEMU does, saying so at
       that location (``None``: serve at once).

       ``tls`` is the server context of the chardev's ``tls-creds=`` and ``admit`` the admission
       of its ``tls-authz=`` (:func:`qmonitor.launch.tls_for_monitors`): every connection is TLS,
       and a client the authz object refuses is closed before the greeting. ``tls_ca_file``
       is the credentials' ``DIR/ca-cert.pem``, which the start-up line telling how to connect
       names.
    ``pretty``: a QMP monitor writing pretty-printed
       JSON (``-qmp-pretty``, ``-mon ...,pretty=on``).
    """

    __slots__ = (
        "address",
        "admit",
        "interactive",
        "label",
        "mode",
        "pretty",
        "tls",
        "tls_ca_file",
        "wait_location",
    )

    mode: Final[Literal["control", "readline"]]
    address: Final[Address | None]
    label: Final[str | None]
    interactive: Final[bool]
    wait_location: Final[str | None]
    tls: Final[ssl.SSLContext | None]
    admit: Final[Admit | None]
    tls_ca_file: Final[str | None]
    pretty: Final[bool]

    def __init__(
        self,
        mode: Literal["control", "readline"],
        address: Address | None,
        label: str | None = None,
        interactive: bool = False,
        wait_location: str | None = None,
        tls: ssl.SSLContext | None = None,
        admit: Admit | None = None,
        tls_ca_file: str | None = None,
        pretty: bool = False,
    ) -> None:
        self.mode = mode
        self.address = address
        self.label = label
        self.interactive = interactive
        self.wait_location = wait_location
        self.tls = tls
        self.admit = admit
        self.tls_ca_file = tls_ca_file
        self.pretty = pretty


class RunPlan(Record):
    """Everything :func:`run_machine` needs, checked: made from a parsed command line.

    ``program`` prefixes the messages (``qmonitor``, ``qmonitor-system-x86_64``);
    ``announce`` prints where the monitors are (``qmonitor run``; QEMU prints nothing);
    ``default_socket`` says the first QMP socket was made up, not asked for.
    """

    __slots__ = (
        "allow_insecure_tcp",
        "allow_path",
        "announce",
        "audit_log",
        "config",
        "default_socket",
        "dirty_rate",
        "faults",
        "incoming",
        "monitors",
        "name",
        "no_shutdown",
        "policy",
        "profile",
        "program",
        "start_paused",
        "state_dir",
        "strict_order",
    )

    name: Final[str | None]
    config: Final[MachineConfig]
    monitors: Final[tuple[MonitorPlan, ...]]
    state_dir: Final[str]
    program: Final[str]
    start_paused: Final[bool]
    incoming: Final[str | None]
    no_shutdown: Final[bool]
    dirty_rate: Final[int]
    strict_order: Final[bool]
    profile: Final[str | None]
    announce: Final[bool]
    default_socket: Final[bool]
    faults: Final[str | None]  # --faults FILE (docs/TESTING.md)
    policy: Final[str | None]  # --policy FILE (docs/SECURITY.md)
    audit_log: Final[str | None]  # --audit-log FILE
    allow_path: Final[tuple[str, ...]]  # --allow-path DIR, repeatable
    allow_insecure_tcp: Final[bool]  # --allow-insecure-tcp

    def __init__(
        self,
        name: str | None,
        config: MachineConfig,
        monitors: tuple[MonitorPlan, ...],
        state_dir: str,
        program: str = "qmonitor",
        start_paused: bool = False,
        incoming: str | None = None,
        no_shutdown: bool = False,
        dirty_rate: int = DEFAULT_DIRTY_RATE,
        strict_order: bool = False,
        profile: str | None = None,
        announce: bool = True,
        default_socket: bool = False,
        faults: str | None = None,
        policy: str | None = None,
        audit_log: str | None = None,
        allow_path: tuple[str, ...] = (),
        allow_insecure_tcp: bool = False,
    ) -> None:
        self.name = name
        self.config = config
        self.monitors = monitors
        self.state_dir = state_dir
        self.program = program
        self.start_paused = start_paused
        self.incoming = incoming
        self.no_shutdown = no_shutdown
        self.dirty_rate = dirty_rate
        self.strict_order = strict_order
        self.profile = profile
        self.announce = announce
        self.default_socket = default_socket
        self.faults = faults
        self.policy = policy
        self.audit_log = audit_log
        self.allow_path = allow_path
        self.allow_insecure_tcp = allow_insecure_tcp

    @property
    def cpus(self) -> int:
        """How many CPUs the machine has: none on ``-machine none`` (x86 creates none there)."""
        return 0 if self.config.machine_type == "none" else self.config.cpus


RAM_NOT_ALLOCATED: Final = "cannot set up guest memory 'ram': Cannot allocate memory"
"""softmmu/physmem.c ``ram_block_add``: QEMU's text (without a location) when the host refuses
the memory, as ``qemu-system-x86_64 -m 1T`` says on a host without 1 TiB."""

NAME_IN_USE: Final = (
    "{error}; is another 'qmonitor run -name {name}' running? Give this one another -name"
)
"""What a second ``qmonitor run`` of the same name (so the same default socket) is told."""


def default_socket_dir() -> str:
    """Where ``qmonitor run`` puts its QMP socket when none is given."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "qmonitor")
    import tempfile  # with its random and shutil, only for this (start-up time)

    return os.path.join(tempfile.gettempdir(), f"qmonitor-{os.getuid()}")


def default_state_dir(name: str) -> str:
    """Where snapshots live without ``--state-dir``: like a disk image, they persist."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "qmonitor", "vms", name)


CLIENT_CERTIFICATE_FILES: Final = ("client-cert.pem", "client-key.pem")
"""The client's certificate and key in the TLS connect line: QEMU's names for them in a
client's credentials directory (crypto/tlscredsx509.h), for the operator to replace."""

_WILDCARD_HOSTS: Final = ("", "0.0.0.0", "::")


def _tls_client_command(address: Address, protocol: str, ca_file: str, certificate: bool) -> str:
    """socat's TLS client (``OPENSSL:``) for a monitor served with ``tls-creds``.

    qmp-shell speaks no TLS; socat checks the server's certificate against ``cafile`` and its
    name against the host connected to. A listener on every address is reached as
    ``localhost`` (a name server certificates usually carry, docs/SECURITY.md). With
    ``verify-peer=on`` the client shows its own certificate: ``cert=``/``key=`` are QEMU's
    names for a client's files, to be replaced by the operator's.
    """
    host = "localhost" if address.host in _WILDCARD_HOSTS else address.host
    host = f"[{host}]" if ":" in host else host
    options = [f"cafile={ca_file}"]
    if certificate:
        cert, key = CLIENT_CERTIFICATE_FILES
        options += [f"cert={cert}", f"key={key}"]
    import shlex  # only for these messages (start-up time)

    target = shlex.quote(f"OPENSSL:{host}:{address.port}," + ",".join(options))
    terminal = "-,echo=0,icanon=0" if protocol == "HMP" else "-"
    command = f"socat {terminal} {target}"
    if certificate:
        command += "  # cert=, key=: your certificate, signed by that CA, and its key"
    return command


def _client_command(
    address: Address, protocol: str, tls: ssl.SSLContext | None = None, ca_file: str | None = None
) -> str:
    """A command line that connects to ``address``, ready to paste into a shell."""
    if tls is not None and ca_file is not None:
        import ssl  # loaded already: the listener is TLS

        return _tls_client_command(address, protocol, ca_file, tls.verify_mode == ssl.CERT_REQUIRED)
    import shlex  # only for these messages (start-up time)

    if protocol == "HMP":
        # QEMU's line editor echoes and edits: the terminal must pass keys through as typed.
        target = (
            f"UNIX-CONNECT:{address.path}"
            if address.transport == "unix"
            else (f"TCP:{address.host}:{address.port}")
        )
        return f"socat -,echo=0,icanon=0 {shlex.quote(target)}"
    target = address.path if address.transport == "unix" else f"{address.host}:{address.port}"
    import shutil  # only for these lines (start-up time)

    if shutil.which("qmp-shell"):
        return f"qmp-shell {shlex.quote(target)}"
    beside = os.path.join(os.path.dirname(sys.executable), "qmp-shell")
    if os.access(beside, os.X_OK):
        return f"{shlex.quote(beside)} {shlex.quote(target)}"
    return f"qmp-shell {shlex.quote(target)}  # from: pip install qemu.qmp"


def _where(protocol: str, address: Address, planned: MonitorPlan) -> list[str]:
    """The lines saying where a listening monitor is, and how to connect to it."""
    where = address.path if address.transport == "unix" else f"{address.host}:{address.port}"
    if planned.tls is not None:
        where += " (TLS)"
    command = _client_command(address, protocol, planned.tls, planned.tls_ca_file)
    return [f"qmonitor: {protocol} socket {where}", f"qmonitor: connect with: {command}"]


async def _wait_for_client(
    monitor: Monitor, location: str, program: str, signalled: asyncio.Event
) -> None:
    """A ``server=on,wait=on`` chardev: QEMU says where it waits and accepts a first client
    before start-up goes on (chardev/char-socket.c ``qmp_chardev_open_socket_server``, its
    ``info_report`` located at the option). A shutdown signal ends the wait (``signalled``):
    start-up then goes on to shut down (docs/STANDIN.md, "Signals")."""
    bound = monitor.listeners[-1].bound_address
    if bound.transport == "unix":
        where = f"unix:{bound.path}"
    elif bound.transport == "fd":
        where = f"fd:{bound.fd}"
    else:
        where = f"tcp:{bound.host}:{bound.port}"
    print(
        f"{program}: {location}: info: QEMU waiting for connection on: "
        f"disconnected:{where},server=on",
        file=sys.stderr,
        flush=True,
    )
    served = asyncio.ensure_future(monitor.chardevs[-1].served.wait())
    stopped = asyncio.ensure_future(signalled.wait())
    await asyncio.wait((served, stopped), return_when=asyncio.FIRST_COMPLETED)
    served.cancel()
    stopped.cancel()


def load_faults(path: str | None) -> FaultSet:
    """The fault rules of ``--faults FILE`` (none without it): every run has a FaultSet, so
    that rules can be added at run time (``__io.github.qmonitor_fault-add``). Raises
    :class:`FaultRuleError` (or ``OSError``) with the file's name."""
    faults = FaultSet()
    if path is not None:
        with open(path, encoding="utf-8") as file:
            text = file.read()
        for rule in parse_faults(text, path):
            faults.add(rule)
    return faults


def _security_refusal(plan: RunPlan) -> str | None:
    """Why the machine must not start as asked (issue 9 item 7), checked before anything is
    created, so that nothing listens: a TCP monitor on a non-loopback address without TLS,
    unless ``--allow-insecure-tcp``."""
    if plan.allow_insecure_tcp:
        return None
    for monitor_plan in plan.monitors:
        if monitor_plan.address is not None:
            refusal = insecure_tcp_error(monitor_plan.address, tls=monitor_plan.tls is not None)
            if refusal is not None:
                return refusal
    return None


def _secured_monitor(plan: RunPlan) -> Monitor:
    """The monitor, with ``--policy`` read and ``--audit-log`` opened (PolicyError, OSError).

    The policy's parser (TOML, the human monitor's argument parser) is loaded only for a
    ``--policy`` (start-up time).
    """
    policy = None
    if plan.policy:
        from qmonitor import load_policy

        policy = load_policy(plan.policy)
    return Monitor(
        plan.name or "vm0",
        strict_order=plan.strict_order,
        policy=policy,
        audit=plan.audit_log,
        allow_insecure_tcp=plan.allow_insecure_tcp,
    )


class _BackendsRefused(Exception):
    """A chardev backend could not be opened (already reported)."""


HOST_BACKENDS: Final = frozenset({"file", "pipe", "pty", "ringbuf", "memory"})
"""The chardev backends opened on the host at start (:mod:`qmonitor.server.backends`)."""


def open_backends(config: MachineConfig, program: str) -> dict[str, OpenedBackend]:
    """Open the chardevs' host backends in order, as QEMU creates its chardevs; a pty says
    where it is on standard output as QEMU does. One that cannot be opened is reported with
    QEMU's text at its option (and, for a ``-serial``/``-parallel`` one, QEMU's second line);
    what was opened is closed again, and :class:`_BackendsRefused` raised."""
    wanted = [
        chardev
        for chardev in config.chardevs
        if isinstance(chardev.backend, SimpleChardev) and chardev.backend.kind in HOST_BACKENDS
    ]
    if not wanted:
        return {}
    from qmonitor import BackendError, open_backend

    opened: dict[str, OpenedBackend] = {}
    for chardev in wanted:
        backend = chardev.backend
        assert isinstance(backend, SimpleChardev)
        try:
            one = open_backend(
                chardev.label,
                backend.kind,
                path=backend.path,
                append=backend.append,
                size=backend.size,
            )
        except BackendError as exc:
            print(f"{program}: {backend.location}: {exc}", file=sys.stderr)
            if backend.port:
                argument = backend.location.partition(" ")[2]
                print(
                    f"{program}: {backend.location}: could not connect {backend.port} device "
                    f"to character backend '{argument}'",
                    file=sys.stderr,
                )
            for done in opened.values():
                done.close()
            raise _BackendsRefused from None
        opened[chardev.label] = one
        if one.device is not None:
            print(f"char device redirected to {one.device} (label {chardev.label})", flush=True)
    return opened


def _with_pty_devices(config: MachineConfig, backends: dict[str, OpenedBackend]) -> MachineConfig:
    """The configuration with each pty's ``/dev/pts/N`` (``query-chardev``'s ``pty:...``)."""
    chardevs = []
    for chardev in config.chardevs:
        opened = backends.get(chardev.label)
        if opened is not None and opened.device is not None:
            assert isinstance(chardev.backend, SimpleChardev)
            chardev = chardev.replace(backend=chardev.backend.replace(device=opened.device))
        chardevs.append(chardev)
    return config.replace(chardevs=tuple(chardevs))


def _register_ring_commands(
    monitor: Monitor, config: MachineConfig, backends: dict[str, OpenedBackend]
) -> None:
    """``ringbuf-write``/``ringbuf-read`` over the rings opened (none: every device is "not
    found" or "not a ringbuf device", as in QEMU)."""
    from qmonitor import register_ringbuf_commands

    rings = {label: opened.ring for label, opened in backends.items() if opened.ring is not None}
    register_ringbuf_commands(monitor, lambda: [c.label for c in config.chardevs], rings)


async def _serve_human(monitor: Monitor, address: Address, **options: Any) -> None:
    """:func:`qmonitor.serve_human`, imported with the first human monitor: a QMP-only program
    does not load the human monitor's modules (start-up time)."""
    from qmonitor import serve_human

    await serve_human(monitor, address, **options)


async def run_machine(plan: RunPlan, on_ready: Callable[[], None] | None = None) -> int:
    """Start the machine and its monitors; return the exit status when it goes away.

    ``on_ready`` is called once every monitor serves (``-daemonize``: the parent may exit).
    """
    program = plan.program
    try:
        faults = load_faults(plan.faults)
    except OSError as exc:
        print(f"{program}: {plan.faults}: {exc.strerror}", file=sys.stderr)
        return 1
    except FaultRuleError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 1
    refusal = _security_refusal(plan)
    if refusal is not None:
        print(f"{program}: {refusal}", file=sys.stderr)
        return 1
    try:
        monitor = _secured_monitor(plan)
    except QMonitorError as exc:  # qmonitor.PolicyError: a policy file that cannot be used
        print(f"{program}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{program}: {plan.audit_log}: {exc.strerror}", file=sys.stderr)
        return 1
    # Signatures are compiled at a command's first use (the schema compiles them all): start-up
    # is what every probe pays. tests/test_program.py has the program compile every one.
    monitor.registry.defer_signatures = True
    install_faults(monitor, faults, deferred=True)
    try:
        machine = Machine(
            plan.name,
            ram_size=plan.config.ram_size,
            start_paused=plan.start_paused,
            incoming=plan.incoming is not None,
            dirty_rate=plan.dirty_rate,
        )
    except MemoryError:
        print(f"{program}: {RAM_NOT_ALLOCATED}", file=sys.stderr)
        return 1
    exit_status = 0
    closing: set[asyncio.Future[None]] = set()

    def exit_machine(status: int) -> None:
        nonlocal exit_status
        exit_status = max(exit_status, status)
        closing.add(asyncio.ensure_future(monitor.close()))

    def terminate(signum: int) -> None:
        """QEMU's ``termsig_handler`` (os-posix.c): SIGINT, SIGHUP and SIGTERM shut down."""
        monitor.emit("SHUTDOWN", {"guest": False, "reason": "host-signal"})
        exit_machine(0)
        # After SIGHUP the terminal may be gone: writing to it fails, which changes nothing.
        with contextlib.suppress(OSError):
            print(f"{program}: terminating on signal {signum}", file=sys.stderr, flush=True)

    # Handled from here on: a signal during start-up (before the monitors are up, or while one
    # waits for its first client) is acted on once start-up is done, so SIGTERM always ends
    # the machine cleanly. QEMU 7.2 sets its handlers up only after its chardevs
    # (os_setup_signal_handling, late in qemu_init) and is killed by a signal before that:
    # a deliberate difference (docs/STANDIN.md, "Signals").
    signals_held: list[int] | None = []
    signalled = asyncio.Event()

    def on_signal(signum: int) -> None:
        if signals_held is None:
            terminate(signum)
        elif not signals_held:
            signals_held.append(signum)
            signalled.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, on_signal, signum)

    if plan.default_socket:
        for planned in plan.monitors:
            if planned.mode == "control" and planned.address is not None:
                os.makedirs(os.path.dirname(planned.address.path), mode=0o700, exist_ok=True)
    # A --profile file is read now, so that a bad one is reported before anything listens;
    # the built-in one is read at its first use, and its module loaded with the commands.
    given_profile: Profile | None = None
    if plan.profile:
        from qmonitor.machine.profile import Profile, ProfileError

        try:
            given_profile = Profile.file(plan.profile).load()
        except ProfileError as exc:
            print(f"{program}: {exc}", file=sys.stderr)
            return 1
    try:
        backends = open_backends(plan.config, program)
    except _BackendsRefused:
        return 1
    config = _with_pty_devices(plan.config, backends) if backends else plan.config
    monitor.registry.defer(lambda: _register_ring_commands(monitor, config, backends))
    registered: list[MachineServices] = []

    def register_commands() -> None:
        """The machine's commands: most of what the program imports."""
        from qmonitor.machine.commands import register_machine_commands
        from qmonitor.machine.profile import Profile
        from qmonitor.machine.snapshots import SnapshotStore

        snapshots = SnapshotStore(plan.state_dir)  # its directory is ready (below)
        services = register_machine_commands(
            monitor,
            machine,
            snapshots,
            on_exit=exit_machine,
            no_shutdown=plan.no_shutdown,
            config=config,
            profile=Profile.default() if given_profile is None else given_profile,
            faults=faults,
        )
        services.migration.file_paths = PathConfinement([snapshots.directory, *plan.allow_path])
        registered.append(services)

    # Registered at the registry's first use (a client's first command, query-commands, the
    # schema, a human monitor's table, a policy's check), after the fault and ring commands
    # deferred above (the order every listing shows), not before the monitors serve:
    # start-up, and the greeting, do not wait for them; and the human monitor's only when one
    # of its commands is named (or all are listed), so a QMP client never loads its modules.
    monitor.registry.defer(register_commands)
    register_human_monitor_command(monitor, cpus=plan.cpus, deferred=True)
    if plan.incoming not in (None, "defer"):
        # The migration listens right after the monitors do, as it did before any deferral: a
        # client that connects to a monitor finds it (almost) at once.
        monitor.registry.load_deferred()
    try:
        if monitor.policy is not None:
            for unmatched in monitor.policy.unmatched_entries(monitor.registry):
                source = monitor.policy.source
                print(
                    f"{program}: warning: {source}: {unmatched} names no command", file=sys.stderr
                )
        # The snapshot directory (SnapshotStore.open, without loading the snapshot files'
        # module, which comes with the commands): made, and rid of dead writers' temporaries.
        os.makedirs(plan.state_dir, exist_ok=True)
        reclaim_temporaries(plan.state_dir)
        # Where each socket monitor is and how to reach it, then where snapshots go: printed
        # before the console's banner (the console comes last unless -monitor stdio is given
        # before other monitors: the monitors are served in command-line order, QEMU's
        # compat_monitorN numbering).
        shown: list[str] = [f"{program}: snapshots in {os.path.normpath(plan.state_dir)}"]
        # The lines are printed when announcing, or before an interactive human monitor takes
        # the terminal; otherwise they are not made (finding qmp-shell on PATH delays the
        # greeting of the stand-in, which never prints them).
        shows_where = plan.announce or any(planned.interactive for planned in plan.monitors)
        for planned in plan.monitors:
            address = planned.address
            if address is None:
                opened = backends.get(planned.label or "")
                if opened is None:
                    monitor.open_chardev(Address("none"), planned.label)
                else:
                    from qmonitor import serve_monitor_on_backend

                    await serve_monitor_on_backend(
                        monitor, opened, planned.mode, label=planned.label, pretty=planned.pretty
                    )
                continue
            if planned.tls is not None and planned.mode == "control":
                # a listener: launch refuses TLS on a monitor that connects out
                await monitor.listen(
                    address,
                    tls=planned.tls,
                    admit=planned.admit,
                    label=planned.label,
                    pretty=planned.pretty,
                )
            elif planned.tls is not None:
                await _serve_human(
                    monitor,
                    address,
                    interactive=False,
                    tls=planned.tls,
                    admit=planned.admit,
                    label=planned.label,
                )
            elif planned.mode == "control":
                await monitor.serve(address, label=planned.label, pretty=planned.pretty)
            elif address.transport == "stdio" and planned.interactive:
                print("\n".join(shown), file=sys.stderr, flush=True)
                shown = []
                await _serve_human(
                    monitor, address, interactive=sys.stdin.isatty(), label=planned.label
                )
            else:
                await _serve_human(monitor, address, interactive=False, label=planned.label)
            if planned.wait_location is not None and address.server:
                await _wait_for_client(monitor, planned.wait_location, program, signalled)
            if shows_where and address.transport in ("unix", "tcp") and address.server:
                label = "QMP" if planned.mode == "control" else "HMP"
                shown[-1:-1] = _where(label, monitor.listeners[-1].bound_address, planned)
        if shown and plan.announce:
            print("\n".join(shown), file=sys.stderr, flush=True)
        if plan.incoming not in (None, "defer"):
            await registered[0].migration.start_incoming(plan.incoming)
    except (AddressError, OSError, QMPError) as exc:
        message = str(exc)
        if isinstance(exc, OSError) and exc.strerror:  # without "[Errno N]"
            message = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
        if isinstance(exc, AddressInUse) and plan.default_socket:
            import shlex  # only for this message (start-up time)

            message = NAME_IN_USE.format(error=message, name=shlex.quote(plan.name or "vm0"))
        print(f"{program}: {message}", file=sys.stderr)
        await monitor.close()
        return 1
    held, signals_held = signals_held, None
    if held:
        terminate(held[0])
    if on_ready is not None:
        on_ready()
    machine.start_workload()
    await monitor.serve_forever()
    for opened in backends.values():
        opened.close()
    for services in registered:
        await services.migration.close()
        await services.jobs.close()
    await machine.close()
    return exit_status
