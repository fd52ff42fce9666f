"""Snapshots of the machine: a checksummed file format, crash-safe writes, validated loads.

QEMU keeps ``savevm`` snapshots inside qcow2 images; this machine has no disks, so a snapshot
is one file per tag in the state directory (``--state-dir``)::

    magic    8 bytes   b"QMSNAP\\0\\1"
    length   4 bytes   little-endian length of the metadata
    metadata JSON      tag, date, guest clock, RAM size, workload step, seed
    page map 1 byte per page: 1 = the page's 4 KiB follow, 0 = a zero page (not stored)
    pages    4 KiB each, for every page whose map byte is 1, in page order
    trailer  12 bytes  b"QMSNAPEND\\0\\0\\0", then 32 bytes: SHA-256 of everything before it

The file of a tag is its percent-encoded name (:meth:`SnapshotStore.path_for`), and that name,
not the copy of the tag in the header, is what a file is listed and loaded as: a file whose
header names another tag (a copy or rename made by hand) is listed as not loadable and refused
by ``loadvm``. Tags are checked (:func:`check_tag`) before anything is touched.

Writing (QEMU ``save_snapshot``, migration/savevm.c): the guest is stopped (``save-vm``), the
file is written under a hidden temporary name (``.TAG.qmsnap.PID.tmp``) that its writer holds
an exclusive ``flock`` on, fsynced, renamed over the final name and the directory fsynced. A
process killed at any point leaves either the old file or the new one under the final name,
never a partial one; temporaries are ignored when listing, and the next process removes those
whose lock it can take (the kernel releases it when the writer dies, however it died). A failed
or cancelled save deletes its temporary; a file system error is reported in one line naming
the snapshot and the cause.

Loading checks the whole file (size, magic, checksum, RAM size) into fresh memory *before*
touching the machine, so a truncated or corrupt snapshot is refused with the machine exactly as
it was. QEMU instead stops the guest first and leaves it stopped (``restore-vm``) when loading
fails (monitor/hmp-cmds.c ``hmp_loadvm``); keeping the machine unchanged is the point here.

Heavy work (page scanning, hashing, file I/O) runs in worker threads, a few MiB per call, so
the monitor stays responsive and progress can be reported between chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import re
import struct
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from qmonitor import FaultPoint, FaultRule, QMPError
from qmonitor.machine.machine import (
    PAGE_SIZE,
    GuestRam,
    Machine,
    RunState,
    allocate_ram,
    data_page_map,
    offload,
)
from qmonitor.machine.statedir import directory_lock, reclaim_temporaries

MAGIC: Final = b"QMSNAP\x00\x01"
TRAILER_MAGIC: Final = b"QMSNAPEND\x00\x00\x00"
TRAILER_SIZE: Final = len(TRAILER_MAGIC) + hashlib.sha256().digest_size
SUFFIX: Final = ".qmsnap"
CHUNK: Final = 8 << 20
"""Bytes written or read per worker-thread call: progress granularity and cancellation latency."""
_LENGTH = struct.Struct("<I")
_DATA_RUN = re.compile(rb"\x01+")
log = logging.getLogger("qmonitor.snapshots")

Progress = Callable[[int, int], None]
"""``progress(done, total)`` in bytes of pages, called between chunks."""
Checkpoint = Callable[[], Awaitable[None]]
"""Awaited between chunks: where a job pauses (``Job.pause_point``) or a command is cancelled."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What ``info snapshots`` shows of a snapshot file; its tag is its file name's."""

    tag: str
    vm_state_size: int
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    ram_size: int
    workload_step: int
    loadable: bool
    """False when the header cannot be read or names another tag (a copy, or a damaged file):
    ``loadvm`` refuses it, ``info snapshots`` lists it apart (see :func:`read_info`)."""


def snapshot_missing(tag: str) -> QMPError:
    """QEMU's text (migration/savevm.c ``load_snapshot``)."""
    return QMPError(f"Snapshot '{tag}' does not exist in one or more devices")


TAG_NAME_MAX: Final = 255 - len(".") - len(SUFFIX) - len(".4194304.tmp")
"""The most bytes a tag may take percent-encoded (235): its temporary ``.TAG.qmsnap.PID.tmp``
must fit Linux's NAME_MAX of 255 bytes with the largest PID (pid_max is at most 2**22).

QEMU's limit is 255 bytes (``QEMUSnapshotInfo.name`` is ``char name[256]``,
include/block/snapshot.h) and ``save_snapshot`` (migration/savevm.c) cuts a longer tag with
``pstrcpy`` without a word, so the snapshot is then not found under the tag given. A tag is
refused here instead, and every tag that fits is within QEMU's limit."""

_FORBIDDEN_IN_TAG = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""Control characters (Unicode category Cc: C0, DEL, C1) and lone surrogates (not text)."""


def check_tag(tag: str) -> None:
    """Refuse a tag no snapshot may have, with a one-line reason; called before anything is
    touched, on every path (save, load, delete; QMP jobs and HMP alike).

    QEMU 7.2 accepts any string (``snapshot-save`` with ``"a\\r\\n(qemu) fake"`` succeeds and
    ``info snapshots`` prints it raw, forging a prompt); a control character here could forge
    monitor output or terminal escapes, so it is refused. An empty tag (QEMU accepts one) would
    name a hidden file; ``savevm`` without a tag makes one up instead, as QEMU's does.
    """
    if not tag:
        raise QMPError("Snapshot tag must not be empty")
    if len(tag) > TAG_NAME_MAX or len(_encode_tag(tag)) > TAG_NAME_MAX:
        raise QMPError(
            f"Snapshot tag is too long: it may take at most {TAG_NAME_MAX} bytes "
            "percent-encoded (each byte other than A-Z a-z 0-9 - . _ ~ takes 3)"
        )
    forbidden = _FORBIDDEN_IN_TAG.search(tag)
    if forbidden is not None:
        code = ord(forbidden.group())
        what = "a surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
        raise QMPError(f"Snapshot tag must not contain {what} (found U+{code:04X})")


def _encode_tag(tag: str) -> str:
    """Percent-encoding, with a leading dot encoded too: any tag is a safe, visible name."""
    name = urllib.parse.quote(tag, safe="", errors="surrogatepass")
    return "%2E" + name[1:] if name.startswith(".") else name


def filesystem_error(action: str, tag: str, exc: OSError) -> QMPError:
    """One line a person can act on: the snapshot and the cause, not the server's paths.

    QEMU says "Error while writing VM state: No space left on device" (``qemu_savevm_state``,
    migration/savevm.c); naming the snapshot says which of several commands failed.
    """
    return QMPError(f"Could not {action} snapshot '{tag}': {_cause(exc)}")


class SnapshotStore:
    """The snapshot files of one state directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def open(self) -> None:
        """Create the directory if needed and reclaim temporaries no writer holds any more."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.reclaim_temporaries()

    def reclaim_temporaries(self) -> None:
        """Delete every temporary whose writer is gone (:func:`reclaim_temporaries`)."""
        reclaim_temporaries(self.directory)

    def path_for(self, tag: str) -> Path:
        """The file of ``tag`` (QMPError for a tag :func:`check_tag` refuses)."""
        check_tag(tag)
        return self.directory / (_encode_tag(tag) + SUFFIX)

    @staticmethod
    def tag_of(name: str) -> str | None:
        """The tag whose file is called ``name``; None if no tag's file is called that.

        The name is the authority: it is what ``loadvm TAG`` opens. A name that is not the
        exact encoding of a valid tag (hand-made, or a control character from an older
        version) is no snapshot's, so it is neither listed nor reachable.
        """
        if not name.endswith(SUFFIX):
            return None
        try:
            tag = urllib.parse.unquote(name[: -len(SUFFIX)], errors="strict")
            check_tag(tag)
        except (UnicodeDecodeError, QMPError):
            return None
        return tag if _encode_tag(tag) + SUFFIX == name else None

    def exists(self, tag: str) -> bool:
        """Whether a file holds ``tag`` (loadable or not: either way the tag is taken)."""
        try:
            self.path_for(tag).stat()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise filesystem_error("find", tag, exc) from None
        return True

    def entries(self) -> list[SnapshotInfo]:
        """Every snapshot file, oldest first (the order QEMU lists them in)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise QMPError(f"Could not list snapshots: {_cause(exc)}") from None
        infos = []
        for name in names:
            tag = self.tag_of(name)
            if tag is not None:
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    infos.append(read_info(self.directory / name, tag))
        return sorted(infos, key=lambda info: (info.date_sec, info.date_nsec, info.tag))

    def tags(self) -> list[str]:
        """The tags of every snapshot (for completion)."""
        return [info.tag for info in self.entries()]

    def delete(self, tag: str) -> bool:
        """Delete ``tag`` durably; False if there was none."""
        try:
            self.path_for(tag).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise filesystem_error("delete", tag, exc) from None
        try:
            _fsync_directory(self.directory)
        except OSError as exc:
            raise filesystem_error("delete", tag, exc) from None
        return True


def _cause(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_metadata(stream: BinaryIO) -> tuple[dict[str, object], bytes]:
    """The metadata of a snapshot and the raw header bytes, or ValueError."""
    head = stream.read(len(MAGIC) + _LENGTH.size)
    if len(head) < len(MAGIC) + _LENGTH.size or head[: len(MAGIC)] != MAGIC:
        raise ValueError("not a qmonitor snapshot")
    (length,) = _LENGTH.unpack_from(head, len(MAGIC))
    raw = stream.read(length)
    if len(raw) != length:
        raise ValueError("truncated header")
    metadata = json.loads(raw)
    if not isinstance(metadata, dict):
        raise ValueError("bad header")
    return metadata, head + raw


def read_info(path: Path, tag: str) -> SnapshotInfo:
    """The listing entry of ``path``, the file of ``tag``: its header only, not the checksum.

    A file whose header cannot be read, or names another tag (a snapshot copied or renamed
    by hand, a damaged file), still holds the tag: it is listed as not loadable, with what
    the file system knows of it, and ``loadvm`` refuses it. Listing it keeps the tag visible
    where it matters (``snapshot-save`` refuses a taken tag, ``delvm`` removes it).
    """
    status = path.stat()
    try:
        with open(path, "rb") as stream:
            metadata, _ = _read_metadata(stream)
        return SnapshotInfo(
            tag=tag,
            vm_state_size=status.st_size,
            date_sec=int(metadata["date-sec"]),  # type: ignore[call-overload]
            date_nsec=int(metadata["date-nsec"]),  # type: ignore[call-overload]
            vm_clock_nsec=int(metadata["vm-clock-nsec"]),  # type: ignore[call-overload]
            ram_size=int(metadata["ram-size"]),  # type: ignore[call-overload]
            workload_step=int(metadata["workload-step"]),  # type: ignore[call-overload]
            loadable=metadata["tag"] == tag,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return SnapshotInfo(
            tag=tag,
            vm_state_size=status.st_size,
            date_sec=status.st_mtime_ns // 1_000_000_000,
            date_nsec=status.st_mtime_ns % 1_000_000_000,
            vm_clock_nsec=0,
            ram_size=0,
            workload_step=0,
            loadable=False,
        )


class SnapshotWriter:
    """Writes one snapshot of a stopped machine, a chunk per :meth:`step` (in a worker thread)."""

    def __init__(self, store: SnapshotStore, tag: str, machine: Machine) -> None:
        self.final_path = store.path_for(tag)
        self.temporary_path = self.final_path.with_name(
            f".{self.final_path.name}.{os.getpid()}.tmp"
        )
        self._directory = store.directory
        self._ram = machine.ram
        now = time.time_ns()
        self._metadata = {
            "tag": tag,
            "date-sec": now // 1_000_000_000,
            "date-nsec": now % 1_000_000_000,
            "vm-clock-nsec": machine.guest_clock_ns(),
            "ram-size": len(machine.ram),
            "workload-step": machine.workload_step,
            "seed": machine.seed,
            "machine": machine.name,
        }
        self._runs: Iterator[tuple[int, int]] = iter(())
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = None
        self.total = 0
        self.done = 0

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._file is not None
        self._file.write(data)
        self._hash.update(data)

    def begin(self) -> None:
        """Create the temporary file; write the header and page map."""
        page_map = data_page_map(self._ram, 0, len(self._ram) // PAGE_SIZE)
        self.total = page_map.count(1) * PAGE_SIZE
        self._runs = ((m.start(), m.end()) for m in _DATA_RUN.finditer(page_map))
        with directory_lock(self._directory):
            self._file = open(  # noqa: SIM115  # closed by commit() or abort()
                os.open(self.temporary_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb"
            )
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        raw = json.dumps(self._metadata, separators=(",", ":")).encode()
        self._write(MAGIC + _LENGTH.pack(len(raw)) + raw)
        self._write(page_map)

    def step(self) -> bool:
        """Write up to :data:`CHUNK` bytes of pages; True when every page is written."""
        view = memoryview(self._ram)
        written = 0
        for start, end in self._runs:
            first = start
            while first < end:
                last = min(end, first + (CHUNK - written) // PAGE_SIZE)
                self._write(view[first * PAGE_SIZE : last * PAGE_SIZE])
                written += (last - first) * PAGE_SIZE
                first = last
                if written >= CHUNK and first < end:
                    self._runs = _chain_run(first, end, self._runs)
                    self.done += written
                    return False
            if written >= CHUNK:
                self.done += written
                return False
        self.done += written
        return True

    def commit(self) -> None:
        """Trailer, fsync, rename over the final name, fsync the directory.

        The file is closed (its lock released) only once renamed: a closed temporary is an
        abandoned one to :meth:`SnapshotStore.reclaim_temporaries`.
        """
        assert self._file is not None
        self._file.write(TRAILER_MAGIC + self._hash.digest())
        self._file.flush()
        os.fsync(self._file.fileno())
        os.replace(self.temporary_path, self.final_path)
        self._close()
        _fsync_directory(self._directory)

    def abort(self) -> None:
        """Forget the snapshot: delete the temporary file, then close it; never raises.

        The order matters on a full disk: closing flushes what the buffer still holds, which
        fails with ENOSPC again, so a close first would leave the temporary (and the disk
        full) behind. Unlinking an open file is fine on POSIX; its space is freed on close.
        If the unlink itself fails the temporary is unlocked once closed, and the next
        process reclaims it (:meth:`SnapshotStore.open`).
        """
        try:
            self.temporary_path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete %s: %s", self.temporary_path.name, exc.strerror)
        finally:
            self._close()

    def _close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):  # the descriptor is closed even when this raises
                file.close()


def _chain_run(start: int, end: int, rest: Iterator[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    yield start, end
    yield from rest


class SnapshotReader:
    """Reads and checks one snapshot into fresh memory, a chunk per :meth:`step`."""

    def __init__(self, path: Path, tag: str, ram_size: int) -> None:
        self.path = path
        self.tag = tag
        self.ram_size = ram_size
        self.ram: GuestRam = bytearray()
        self.metadata: dict[str, object] = {}
        self.total = 0
        self.done = 0
        self._hash = hashlib.sha256()
        self._file: io.BufferedReader | None = None
        self._runs: Iterator[tuple[int, int]] = iter(())

    def _damaged(self, reason: str) -> QMPError:
        return QMPError(f"Snapshot '{self.tag}' is damaged ({reason}); the VM was left unchanged")

    def begin(self) -> None:
        """Open the file; read and check the header and the page map."""
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115  # closed by finish() or close()
        except FileNotFoundError:
            raise snapshot_missing(self.tag) from None
        size = os.fstat(self._file.fileno()).st_size
        try:
            self.metadata, header = _read_metadata(self._file)
            ram_size = int(self.metadata["ram-size"])  # type: ignore[call-overload]
            int(self.metadata["workload-step"])  # type: ignore[call-overload]
        except (ValueError, KeyError, TypeError) as exc:
            raise self._damaged(f"bad header: {exc}") from None
        if self.metadata.get("tag") != self.tag:
            raise self._damaged("its header names another tag")
        if ram_size != self.ram_size:
            raise QMPError(
                f"Snapshot '{self.tag}' was taken with {ram_size} bytes of RAM, "
                f"this VM has {self.ram_size}"
            )
        self._hash.update(header)
        pages = ram_size // PAGE_SIZE
        page_map = self._file.read(pages)
        if len(page_map) != pages:
            raise self._damaged("truncated")
        self._hash.update(page_map)
        self.total = page_map.count(1) * PAGE_SIZE
        if size != len(header) + pages + self.total + TRAILER_SIZE:
            raise self._damaged(
                f"size is {size} bytes, expected {len(header) + pages + self.total + TRAILER_SIZE}"
            )
        self.ram = allocate_ram(ram_size)
        self._runs = ((m.start(), m.end()) for m in _DATA_RUN.finditer(page_map))

    def step(self) -> bool:
        """Read up to :data:`CHUNK` bytes of pages; True when all are read and checked."""
        assert self._file is not None
        view = memoryview(self.ram)
        read = 0
        for start, end in self._runs:
            first = start
            while first < end:
                last = min(end, first + max(1, (CHUNK - read) // PAGE_SIZE))
                target = view[first * PAGE_SIZE : last * PAGE_SIZE]
                if self._file.readinto(target) != len(target):
                    raise self._damaged("truncated")
                self._hash.update(target)
                read += len(target)
                first = last
                if read >= CHUNK and first < end:
                    self._runs = _chain_run(first, end, self._runs)
                    self.done += read
                    return False
        self.done += read
        trailer = self._file.read(TRAILER_SIZE)
        if trailer[: len(TRAILER_MAGIC)] != TRAILER_MAGIC:
            raise self._damaged("no trailer")
        if trailer[len(TRAILER_MAGIC) :] != self._hash.digest():
            raise self._damaged("checksum mismatch")
        return True

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


async def _yield() -> None:
    await asyncio.sleep(0)


def _injected_io_error(fault: FaultRule | None, writer: SnapshotWriter) -> None:
    """Fail as a disk would (EIO) once ``fault.at_percent`` of the pages are written: checked
    before each chunk and before the commit, so at the first chunk boundary at or past it."""
    at_percent = fault.at_percent if fault is not None else None
    if at_percent is not None and writer.done * 100 >= at_percent * writer.total:
        raise OSError(errno.EIO, os.strerror(errno.EIO))


async def save_snapshot(
    machine: Machine,
    store: SnapshotStore,
    tag: str,
    progress: Progress,
    checkpoint: Checkpoint | None = None,
    faults: FaultPoint | None = None,
) -> None:
    """Save the machine under ``tag`` (replacing an existing one), as QEMU's ``save_snapshot``.

    The tag is checked before the guest is touched. The guest is stopped in ``save-vm``
    meanwhile and put back as it was afterwards; on any failure or cancellation no new file is
    left and the old one (if any) is untouched. A file system error is one line naming the
    snapshot and the cause (:func:`filesystem_error`).
    """
    check_tag(tag)
    fault = faults.savevm_fault() if faults is not None else None
    machine.enter_transient(RunState.SAVE_VM)
    writer = SnapshotWriter(store, tag, machine)
    try:
        await offload(writer.begin)
        progress(0, writer.total)
        _injected_io_error(fault, writer)
        while not await offload(writer.step):
            progress(writer.done, writer.total)
            _injected_io_error(fault, writer)
            await (checkpoint or _yield)()
        _injected_io_error(fault, writer)
        await offload(writer.commit)
        progress(writer.total, writer.total)
    except OSError as exc:
        writer.abort()
        raise filesystem_error("save", tag, exc) from None
    except BaseException:
        writer.abort()
        raise
    finally:
        machine.leave_transient()


async def load_snapshot(
    machine: Machine,
    store: SnapshotStore,
    tag: str,
    progress: Progress,
    checkpoint: Checkpoint | None = None,
) -> None:
    """Replace the machine's state with snapshot ``tag``, checked in full first.

    The guest goes through ``restore-vm`` (STOP, RESUME if it was running) only once the file
    has been read and verified, so a refused snapshot changes nothing.
    """
    reader = SnapshotReader(store.path_for(tag), tag, len(machine.ram))
    try:
        await offload(reader.begin)
        while not await offload(reader.step):
            progress(reader.done, reader.total)
            await (checkpoint or _yield)()
    except OSError as exc:
        raise filesystem_error("load", tag, exc) from None
    finally:
        reader.close()
    progress(reader.total, reader.total)
    machine.enter_transient(RunState.RESTORE_VM)
    try:
        machine.replace_state(
            reader.ram,
            int(reader.metadata["workload-step"]),  # type: ignore[call-overload]
            int(reader.metadata.get("seed", 0)),  # type: ignore[call-overload]
            int(reader.metadata.get("vm-clock-nsec", 0)),  # type: ignore[call-overload]
        )
    finally:
        machine.leave_transient()


def human_size(size: int) -> str:
    """QEMU's ``size_to_str`` (util/cutils.c): three significant digits, binary units."""
    _, exponent = math.frexp(size / (1000 / 1024))
    index = max(0, (exponent - 1) // 10)  # C's (e - 1) / 10 truncates -1 to 0
    suffix = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")[index]
    return f"{size / (1 << (10 * index)):0.3g} {suffix}B"
