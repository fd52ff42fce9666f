"""Human monitor sessions: a line in, the command run by the dispatcher, text out.

The seed's rule, kept: a human monitor is **suspended at submit and resumed at completion**.
QEMU implements it with a counter (``monitor_suspend``/``monitor_resume`` in
``monitor/monitor.c``): while it is non-zero the monitor shows no prompt and reads no input
(``monitor_can_read`` returns 0, so bytes stay in the socket); when it drops back to zero the
prompt is shown and reading resumes. ``monitor_command_cb`` (``monitor/hmp.c``) wraps every
command line in one suspend/resume pair; a command that goes on in the background (``migrate``)
takes one more and gives it back when it is done. Here :meth:`HumanSession.execute` suspends,
submits the line's command to the monitor (the same point of dispatch as QMP's), and resumes
when its invocation has its outcome, so an async command holds the prompt exactly as long as
it runs, and only its own session: other human sessions and every QMP session go on. A command
can take more suspensions through ``ctx.session.suspend()``/``resume()``; the prompt returns at
zero.

What a session prints (QEMU's texts): the parser's messages (:mod:`qmonitor.hmp.parse`), the
result through the command's renderer (``human=``: it gets the handler's own return value,
:data:`~qmonitor.core.commands.HumanRenderer`; without one :func:`~qmonitor.hmp.render.render_value`
prints the JSON QMP would send), or ``Error: DESC`` (``hmp_handle_error``).

Detaching: a command registered ``detachable=True`` takes ``-d`` and then runs in the
background while the prompt comes back (QEMU's ``migrate -d``). A session that cannot be
suspended (``human-monitor-command``: QEMU's ``monitor_suspend`` fails with ``-ENOTTY`` for a
monitor without readline) runs such a command detached and says
``terminal does not allow synchronous ACTIVITY, continuing detached`` (``hmp_migrate``). Where
the prompt comes back depends on the handler:

- a handler that takes ``detach`` itself does what QEMU's ``hmp_migrate`` does: it starts the
  work, and returns at once when detached (``detach=True``, also given by a session that cannot
  wait) or when the work is done. The session waits for that return like for any command, so
  an error of the start is printed (``migrate -d`` while a migration runs: ``Error: There's a
  migration process in progress``); the "continuing detached" line follows a successful start;
- any other detachable command is detached as soon as it is submitted.

Interactive sessions (the console; sockets when asked) go beyond QEMU: a progress line for a
command reporting ``ctx.progress``, drawn at most every :data:`PROGRESS_INTERVAL` seconds and
cleared before the result, and the outcome of detached commands as lines above the prompt.
QMP events are shown above the prompt while :attr:`HumanSession.events_shown` is true: by default
in interactive sessions only, and any session switches them with the ``events on|off`` command
(:mod:`qmonitor.server.human`). A non-interactive session that did not ask for events prints
exactly what QEMU would.

:class:`HMPSession` serves a byte stream (unix or TCP socket, a pipe on stdio) with QEMU's line
editor and echo (:mod:`qmonitor.hmp.readline`) and its ``\\r\\n`` line ends.
:class:`CapturedSession` collects the text of one line for ``human-monitor-command``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from qmonitor.core.commands import Progress
from qmonitor.core.dispatch import Invocation, encode_result, run_on_loop
from qmonitor.core.errors import QMPError, StateError
from qmonitor.core.events import Event
from qmonitor.core.session import Session, SessionKind
from qmonitor.hmp.complete import complete
from qmonitor.hmp.parse import ParseFailure, parse_line
from qmonitor.hmp.readline import ReadLine
from qmonitor.hmp.render import event_text, progress_text, render_value
from qmonitor.hmp.table import DETACH_KEY, HumanEntry, command_table
from qmonitor.server.host import SessionHost
from qmonitor.server.listen import describe_peer
from qmonitor.server.peer import session_identity

log = logging.getLogger("qmonitor.hmp")

PROGRESS_INTERVAL: Final = 0.1  # seconds between two redraws of the progress line
INPUT_HIGH_WATER: Final = 64 * 1024  # bytes of unread input kept before we stop reading
INPUT_LOW_WATER: Final = 16 * 1024
CANCELLED_ON_CLOSE: Final = "cancelled: the human monitor session was closed"


def banner(monitor: SessionHost) -> str:
    """QEMU's first line (``monitor_event``, CHR_EVENT_OPENED), with the version we speak."""
    version = monitor.version_info["qemu"]
    return (
        f"QEMU {version['major']}.{version['minor']}.{version['micro']} monitor - "
        "type 'help' for more information\n"
    )


def error_text(error: QMPError) -> str:
    """``hmp_handle_error``: ``Error: DESC``."""
    return f"Error: {error.desc}\n"


@dataclass(frozen=True, slots=True)
class Running:
    """A command a session waits for (or lets run detached).

    ``detached_note`` is printed before a successful result: the "continuing detached" line of a
    command that was told to detach because the session cannot wait for it.
    """

    entry: HumanEntry
    invocation: Invocation
    detached_note: str = ""


class HumanSession:
    """What every human session shares: running lines, the suspend counter, rendering.

    Subclasses say where text goes (:meth:`write`), what resuming shows (:meth:`_resumed`) and,
    for interactive ones, how progress and notices are drawn.
    """

    kind = SessionKind.HMP
    suspendable = True  # False: monitor_suspend() fails, detachable commands run detached
    can_show_events = True  # False: the session ends with its one command

    def __init__(self, monitor: SessionHost, *, interactive: bool, peer: str = "") -> None:
        self.monitor = monitor
        self.peer = peer  # who types: set when the connection is made, if not given
        self.identity = session_identity(None)  # the console's; a connection's once made
        self.interactive = interactive
        self.events_shown = interactive and self.can_show_events
        self.suspend_count = 0
        self.running: Running | None = None
        self.cpu_index: int | None = None
        """The current CPU of a session that is a monitor of its own (``human-monitor-command``'s
        temporary monitor, the console): :func:`qmonitor.server.human.cpu_selection`."""
        self._progress_drawn_at = -PROGRESS_INTERVAL
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    # -- for subclasses -----------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Send ``text`` (``\\n`` line ends) to the person."""
        raise NotImplementedError

    def _resumed(self) -> None:
        """The counter went back to zero: show the prompt, read input again."""
        raise NotImplementedError

    def draw_progress(self, text: str) -> None:
        """Show ``text`` as the progress line of the running command (interactive only)."""

    def clear_progress(self) -> None:
        """Remove the progress line, if one is shown."""

    def notify(self, text: str) -> None:
        """Show ``text`` (one or more lines) above the prompt (sessions with a prompt)."""

    def close(self) -> None:
        """End the session (the monitor is shutting down)."""
        self.abandon()

    def cancel_request(self, request_id: object) -> bool:
        """Human sessions have no request ids: there is never one to cancel by id."""
        return False

    # -- suspend and resume (monitor_suspend / monitor_resume) --------------------------------

    @property
    def suspended(self) -> bool:
        """Whether the prompt is held: no prompt shown, no input read."""
        return self.suspend_count > 0

    def suspend(self) -> None:
        """Hold the prompt and the input until a matching :meth:`resume`."""
        self.suspend_count += 1

    def resume(self) -> None:
        """Give back one suspension; at zero the prompt returns and input is read again."""
        if self.suspend_count <= 0:
            raise StateError("resume() without a matching suspend()")
        self.suspend_count -= 1
        if self.suspend_count == 0:
            self._resumed()

    # -- running a line -----------------------------------------------------------------------

    def execute(self, line: str) -> None:
        """Run one command line; the session stays suspended until its command completes."""
        self.suspend()
        running = self.start_line(line)
        if running is None:
            self.resume()
            return
        self.running = running
        invocation = running.invocation
        if self.interactive:
            invocation.context.add_progress_listener(self._progress_from_any_thread)
        invocation.future.add_done_callback(lambda _: self._completed(running))

    def start_line(self, line: str) -> Running | None:
        """Parse and start ``line``; print what is known at once; the command still running.

        Returns None when there is nothing to wait for: a parse error, a sync command, a
        detached one.
        """
        try:
            table = command_table(self.monitor.registry)
        except ValueError as error:
            self.write(f"Error: {error}\n")
            return None
        parsed = parse_line(table, line)
        if parsed is None:
            return None
        if isinstance(parsed, ParseFailure):
            self.write(parsed.text)
            return None
        entry = parsed.entry
        command = entry.command
        activity = (command.human and command.human.activity) or entry.full_name
        arguments = parsed.arguments
        detached_note = ""
        if command.detachable and entry.passes_detach and not self.suspendable:
            if not parsed.detach:
                detached_note = (
                    f"terminal does not allow synchronous {activity}, continuing detached\n"
                )
            arguments = {**arguments, DETACH_KEY: True}
        try:
            outcome = self.monitor.submit(command.name, arguments, session=self)
            if isinstance(outcome, tuple):  # Returned: a sync command's result
                returned = outcome[1]
                # Encoded even for a renderer: a result its type hint denies is the same
                # error here as over QMP.
                encoded = encode_result(command, returned, command.signature.encode_return)
                self._write_nonempty(self._render(entry, returned, encoded))
                return None
        except QMPError as error:
            self.write(error_text(error))
            return None
        invocation = outcome
        running = Running(entry, invocation, detached_note)
        if invocation.done:
            self.print_outcome(running)
            return None
        if entry.passes_detach:
            return running  # the handler returns when it lets go (hmp_migrate's order)
        if parsed.detach or (command.detachable and not self.suspendable):
            if not parsed.detach:
                self.write(f"terminal does not allow synchronous {activity}, continuing detached\n")
            self.detach(running)
            return None
        return running

    def print_outcome(self, running: Running) -> None:
        """Print a finished command's result or error."""
        self._write_nonempty(self.outcome_text(running))

    def outcome_text(self, running: Running) -> str:
        """A finished command's result, rendered, or its error."""
        error = running.invocation.future.exception()
        if error is not None:
            assert isinstance(error, QMPError)
            return error_text(error)
        invocation = running.invocation
        return running.detached_note + self._render(
            running.entry, invocation.returned, invocation.future.result()
        )

    def _render(self, entry: HumanEntry, returned: object, encoded: object) -> str:
        """The command's renderer on the value its handler returned, or the default one on
        the JSON QMP would send."""
        renderer = entry.command.renderer
        try:
            return render_value(encoded) if renderer is None else renderer(returned)
        except Exception as error:
            log.exception("renderer of '%s' failed", entry.command.name)
            return f"Error: cannot show the result of '{entry.full_name}': {error!r}\n"

    def _write_nonempty(self, text: str) -> None:
        if text:
            self.write(text)

    def _completed(self, running: Running) -> None:
        if self.running is not running:
            running.invocation.future.exception()  # the session is gone; mark it retrieved
            return
        self.running = None
        self.clear_progress()
        self.print_outcome(running)
        self.resume()

    def detach(self, running: Running) -> None:
        """Let ``running`` go on in the background; interactive sessions hear of its end."""

        def finished(_: object) -> None:
            text = self.outcome_text(running)
            if self.interactive and text:
                self.notify(f"[{running.entry.full_name} finished] {text}")

        running.invocation.future.add_done_callback(finished)

    # -- progress and events ------------------------------------------------------------------

    def _progress_from_any_thread(self, progress: Progress) -> None:
        run_on_loop(self._loop, self._loop_thread, self._show_progress, progress)

    def _show_progress(self, progress: Progress) -> None:
        running = self.running
        now = self.monitor.clock.monotonic()
        if running is None or now - self._progress_drawn_at < PROGRESS_INTERVAL:
            return
        self._progress_drawn_at = now
        self.draw_progress(progress_text(running.entry.full_name, progress))

    def show_event(self, event: Event) -> None:
        """A monitor event listener: one line per event while :attr:`events_shown`."""
        if self.events_shown:
            self.notify(
                event_text(event.name, event.data, event.seconds, event.microseconds) + "\n"
            )

    def abandon(self) -> None:
        """The session goes away: cancel what it waits for (a detachable command detaches)."""
        running, self.running = self.running, None
        if running is None:
            return
        if running.entry.command.detachable:
            self.detach(running)
        else:
            running.invocation.cancel(CANCELLED_ON_CLOSE)


class CapturedSession(HumanSession):
    """One ``human-monitor-command``: the text of a line, with ``\\r\\n`` line ends.

    Like QEMU's temporary monitor in ``qmp_human_monitor_command`` it cannot be suspended, so a
    detachable command runs detached; any other async command is waited for.
    """

    kind = SessionKind.HUMAN_MONITOR_COMMAND
    suspendable = False
    can_show_events = False

    def __init__(self, monitor: SessionHost, via: Session | None = None) -> None:
        """``via``: the QMP session the line came from (its peer and identity are this
        session's)."""
        super().__init__(monitor, interactive=False, peer=via.peer if via is not None else "")
        if via is not None:
            self.identity = via.identity
        self._output: list[str] = []

    def write(self, text: str) -> None:
        self._output.append(text)

    def _resumed(self) -> None:
        """Nothing to show: this session has no prompt."""

    async def run(self, line: str) -> str:
        """Run ``line`` and return everything it printed."""
        running = self.start_line(line)
        if running is not None:
            try:
                await asyncio.wait({running.invocation.future})
            except asyncio.CancelledError:
                running.invocation.cancel()
                raise
            self.print_outcome(running)
        return "".join(self._output).replace("\n", "\r\n")


def _is_tls(transport: asyncio.BaseTransport | None) -> bool:
    """Whether ``transport`` is a TLS connection (asyncio's SSL transport)."""
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class HMPSession(HumanSession, asyncio.Protocol):
    """A human monitor on a byte stream, as QEMU serves ``-monitor unix:...`` (readline mode).

    On connect: the banner and the prompt. Input is fed to QEMU's line editor one byte at a
    time and only while the session is not suspended; bytes that arrive meanwhile wait in
    ``pending_input`` (and past :data:`INPUT_HIGH_WATER`, in the socket). At end of input the
    pending lines still run, and the connection closes once the last command has finished.
    """

    def __init__(
        self,
        monitor: SessionHost,
        *,
        interactive: bool = False,
        on_open: Callable[[HumanSession], None] | None = None,
        on_close: Callable[[HumanSession], None] | None = None,
        close_at_eof: bool = True,
    ) -> None:
        super().__init__(monitor, interactive=interactive)
        self.transport: asyncio.Transport | None = None
        self.pending_input = bytearray()
        self._readline = ReadLine(self._complete)
        self._on_open = on_open
        self._on_close = on_close
        self._close_at_eof = close_at_eof
        self._eof = False
        self._pumping = False
        self._reading_paused = False
        self._writing_paused = False
        self._notifications_dropped = 0  # event/progress lines not shown to a stuck client
        self._progress_line: str | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if not self.peer:
            self.peer = describe_peer(transport)
        self.identity = session_identity(transport)
        if self._on_open is not None:
            self._on_open(self)
        self.monitor.add_event_listener(self.show_event)  # shown only while events_shown
        self.write(banner(self.monitor))
        self._send(self._readline.show_prompt())

    def data_received(self, data: bytes) -> None:
        self.pending_input += data
        self._pump()

    def eof_received(self) -> bool:
        self._eof = True
        self._pump()
        # Keep writing: the pending lines still run. Not over TLS, where the end of input is
        # the end of the session (asyncio/sslproto.py shuts the connection down whatever we
        # answer, and warns on stderr when the answer is True).
        return not _is_tls(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pending_input.clear()
        self.monitor.remove_event_listener(self.show_event)
        self.abandon()
        if self._on_close is not None:
            self._on_close(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._pump()

    def close(self) -> None:
        super().close()
        if self.transport is not None:
            self.transport.close()

    # -- input --------------------------------------------------------------------------------

    @property
    def unparsed_input_bytes(self) -> int:
        """Bytes received and not fed to the line editor yet (:mod:`qmonitor.server.fds`)."""
        return len(self.pending_input)

    def _complete(self, text: str) -> tuple[str, list[str]]:
        try:
            return complete(command_table(self.monitor.registry), text)
        except ValueError:
            return "", []

    def _pump(self) -> None:
        """Feed pending bytes to the line editor while the session is not suspended."""
        if self._pumping or self.transport is None:
            return
        self._pumping = True
        try:
            consumed = 0
            while (
                consumed < len(self.pending_input)
                and not self.suspended
                and not self._writing_paused
                and self.transport is not None
            ):
                echo, line = self._readline.feed(self.pending_input[consumed])
                consumed += 1
                self._send(echo)
                if line is not None:
                    # The line's command sees only what follows it as unread: which passed
                    # descriptors came before it is counted from that (unparsed_input_bytes).
                    del self.pending_input[:consumed]
                    consumed = 0
                    self.execute(line.decode("utf-8", "replace"))
            del self.pending_input[:consumed]
        finally:
            self._pumping = False
        self._flow_control()

    def _flow_control(self) -> None:
        transport = self.transport
        if transport is None:
            return
        size = len(self.pending_input)
        if not self._reading_paused and size > INPUT_HIGH_WATER:
            self._reading_paused = True
            transport.pause_reading()
        elif self._reading_paused and size < INPUT_LOW_WATER and not self._eof:
            self._reading_paused = False
            transport.resume_reading()
        if self._eof and self._close_at_eof and not size and not self.suspended:
            transport.close()

    def _resumed(self) -> None:
        self._send(self._readline.show_prompt())
        self._pump()

    # -- output -------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data.replace(b"\n", b"\r\n"))

    def write(self, text: str) -> None:
        self._send(text.encode("utf-8", "replace"))

    def draw_progress(self, text: str) -> None:
        self._progress_line = text
        if self._writing_paused:
            return  # a person's screen that is not being read: the next draw will do
        self._send(b"\r" + text.encode("utf-8", "replace") + b"\x1b[K")

    def clear_progress(self) -> None:
        if self._progress_line is not None:
            self._progress_line = None
            self._send(b"\r\x1b[K")

    def notify(self, text: str) -> None:
        if self._writing_paused:
            # Extras for people (events, progress) are dropped for a client that does not
            # read, so that its output stays bounded; command output is never dropped, and it
            # is bounded because a suspended or paused session reads no new commands.
            self._notifications_dropped += 1
            return
        self._send(b"\r\x1b[K")
        self.write(text)
        if not self.suspended:
            self._send(self._readline.redisplay())
        elif self._progress_line is not None:
            self.draw_progress(self._progress_line)
