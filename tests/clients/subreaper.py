"""``python3 subreaper.py PROGRAM [ARGS...]``: run PROGRAM as a child subreaper's only child,
reap every process orphaned under it at once, and exit with PROGRAM's status.

Why: libvirt starts each emulator as a daemon (double fork), so the emulator's parent is PID 1;
``virsh destroy`` (and ``save``, which ends the emulator) signals it and then polls
``kill(pid, 0)`` until the pid is gone, which only happens once PID 1 reaps the zombie. Where
PID 1 reaps lazily (on these machines it takes ~1.6 s) every destroy waits that long. As the
nearest ancestor marked with ``PR_SET_CHILD_SUBREAPER`` (prctl(2)), this process receives the
orphans instead and reaps them as soon as they exit, as an init would. SIGTERM and SIGINT are
passed on to PROGRAM. When PROGRAM has exited, the orphans still running get SIGTERM and are
reaped before this process exits, so nothing PROGRAM started outlives it.

Only the standard library: it runs as the libvirt session's user, under the system Python.
"""

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    # Signals wait until PROGRAM exists and there is a handler to pass them on.
    passed_on = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, passed_on)
    program = os.fork()
    if program == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, passed_on)
        os.execvp(sys.argv[1], sys.argv[1:])
    for number in passed_on:
        signal.signal(number, lambda received, _frame: os.kill(program, received))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, passed_on)
    while True:
        pid, status = os.wait()
        if pid == program:
            break
    # What PROGRAM left behind (libvirtd's virtlogd, an emulator still running) is ours now:
    # end it too, so that nothing outlives PROGRAM.
    for orphan in children():
        os.kill(orphan, signal.SIGTERM)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return os.waitstatus_to_exitcode(status)


def children() -> list[int]:
    """The processes whose parent is this one (procfs: field 4 of /proc/PID/stat)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                found.append(int(entry))
    return found


if __name__ == "__main__":
    sys.exit(main())
