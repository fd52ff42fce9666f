"""Background jobs with QEMU's job API: ``query-jobs``, ``job-*`` and ``JOB_STATUS_CHANGE``.

A job is long work that outlives the command that started it (QEMU's ``snapshot-save``,
``blockdev-create``, ``mirror``...): the command returns ``{}`` at once and the client follows the
job through ``JOB_STATUS_CHANGE`` events and ``query-jobs``. Any embedder can run its own::

    jobs = JobManager(monitor)

    async def copy(job: Job) -> None:
        for done in range(100):
            job.progress(done, 100)
            await job.pause_point()       # job-pause lands here; job-cancel too
            ...

    @monitor.command(name="my-copy")
    def my_copy(job_id: Annotated[str, QMPName("job-id")]) -> None:
        jobs.start(job_id, "my-copy", copy)

The states, and which verb each state accepts, are the tables of :mod:`qmonitor.core.jobs`
(QEMU's job.c); the texts of the errors are QEMU 7.2's. A job is an asyncio task: cancellation
(``job-cancel``) is delivered as :class:`asyncio.CancelledError` at the job's next ``await``,
pausing (``job-pause``) at its next :meth:`Job.pause_point`, as QEMU delivers both at a job's
pause points (``job_pause_point``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from qmonitor.core.errors import QMPError
from qmonitor.core.jobs import (
    COMPLETED_STATES,
    JobStatus,
    JobVerb,
    check_transition,
    check_verb,
    is_well_formed_id,
)
from qmonitor.server.monitor import Monitor

log = logging.getLogger("qmonitor.jobs")

JobRun = Callable[["Job"], Awaitable[None]]
"""A job's work: a coroutine function taking its :class:`Job`; raise QMPError to fail."""

CANCELLED_ERROR = os.strerror(errno.ECANCELED)
"""What ``query-jobs`` says of a cancelled job: QEMU's ``strerror(ECANCELED)`` (job.c
``job_update_rc``), "Operation canceled" with glibc."""


@dataclass(frozen=True, slots=True)
class JobInfo:
    """qapi/job.json ``JobInfo``."""

    id: str
    type: str
    status: JobStatus
    current_progress: int
    total_progress: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class JobStatusChange:
    """The ``JOB_STATUS_CHANGE`` event's data (qapi/job.json)."""

    id: str
    status: JobStatus


class Job:
    """One job: its identity, state, progress and outcome (QEMU's ``Job``)."""

    def __init__(
        self,
        manager: JobManager,
        job_id: str,
        job_type: str,
        *,
        auto_finalize: bool,
        auto_dismiss: bool,
        on_complete: Callable[[], None] | None,
    ) -> None:
        self.id = job_id
        self.type = job_type
        self.status = JobStatus.UNDEFINED
        self.current_progress = 0
        self.total_progress = 0
        self.error: str | None = None
        self.auto_finalize = auto_finalize
        self.auto_dismiss = auto_dismiss
        self.user_paused = False
        self.cancel_requested = False
        self._manager = manager
        self._on_complete = on_complete
        self._pause_count = 0
        self._resumed = asyncio.Event()
        self._finalized = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- for the job's own code ------------------------------------------------------------

    def progress(self, current: int, total: int | None = None) -> None:
        """Report progress (``current-progress`` / ``total-progress`` in ``query-jobs``)."""
        self.current_progress = current
        if total is not None:
            self.total_progress = total

    async def pause_point(self) -> None:
        """Where a paused job stops and a cancelled one ends (job.c ``job_pause_point``)."""
        await asyncio.sleep(0)
        if self._pause_count == 0:
            return
        paused_from = self.status
        self._transition(JobStatus.STANDBY if paused_from is JobStatus.READY else JobStatus.PAUSED)
        try:
            while self._pause_count > 0:
                self._resumed.clear()
                await self._resumed.wait()
        finally:
            self._transition(paused_from)

    def set_ready(self) -> None:
        """The work is done but the job goes on until ``job-complete`` (QEMU's mirror)."""
        self._transition(JobStatus.READY)

    async def wait(self) -> None:
        """Wait until the job is concluded (or dismissed)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    # -- state -----------------------------------------------------------------------------

    def _transition(self, new: JobStatus) -> None:
        previous = self.status
        check_transition(self.id, previous, new)
        self.status = new
        self._manager._status_changed(self, previous)

    def info(self) -> JobInfo:
        """The ``query-jobs`` entry of this job."""
        return JobInfo(
            self.id,
            self.type,
            self.status,
            self.current_progress,
            self.total_progress,
            self.error,
        )

    async def _run(self, run: JobRun) -> None:
        """The job's life after ``running``: its work, then conclusion (job.c ``job_exit``)."""
        try:
            await run(self)
            self._transition(JobStatus.WAITING)  # no transactions: nothing to wait for
            self._transition(JobStatus.PENDING)
            if not self.auto_finalize:
                await self._finalized.wait()
        except asyncio.CancelledError:
            self.error = CANCELLED_ERROR
        except QMPError as exc:
            self.error = exc.desc
        except Exception as exc:
            log.exception("job '%s' failed unexpectedly", self.id)
            self.error = f"{type(exc).__name__}: {exc}"
        if self.error is not None:
            self._transition(JobStatus.ABORTING)
        self._transition(JobStatus.CONCLUDED)
        if self.auto_dismiss:
            self._manager._dismiss(self)

    # -- verbs (the job-* commands) ----------------------------------------------------------

    def user_pause(self) -> None:
        """``job-pause`` (job.c ``job_user_pause_locked``)."""
        check_verb(self.id, self.status, JobVerb.PAUSE)
        if self.user_paused:
            raise QMPError("Job is already paused")
        self.user_paused = True
        self._pause_count += 1

    def user_resume(self) -> None:
        """``job-resume`` (job.c ``job_user_resume_locked``)."""
        if not self.user_paused or self._pause_count <= 0:
            raise QMPError("Can't resume a job that was not paused")
        check_verb(self.id, self.status, JobVerb.RESUME)
        self.user_paused = False
        self._pause_count -= 1
        if self._pause_count == 0:
            self._resumed.set()

    def user_cancel(self) -> None:
        """``job-cancel``: the job ends at its next ``await`` and concludes with an error."""
        check_verb(self.id, self.status, JobVerb.CANCEL)
        self.cancel_requested = True
        if self.user_paused:  # job.c job_cancel_async_locked: a cancelled job is unpaused
            self.user_paused = False
            self._pause_count -= 1
        if self._task is not None:
            self._task.cancel()

    def user_complete(self) -> None:
        """``job-complete`` (job.c ``job_complete_locked``)."""
        check_verb(self.id, self.status, JobVerb.COMPLETE)
        if self.cancel_requested or self._on_complete is None:
            raise QMPError(f"The active block job '{self.id}' cannot be completed")
        self._on_complete()

    def user_finalize(self) -> None:
        """``job-finalize``: a job created with ``auto_finalize=False`` may conclude."""
        check_verb(self.id, self.status, JobVerb.FINALIZE)
        self._finalized.set()

    def user_dismiss(self) -> None:
        """``job-dismiss``: forget a concluded job."""
        check_verb(self.id, self.status, JobVerb.DISMISS)
        self._manager._dismiss(self)


class JobManager:
    """The jobs of one monitor, and the QMP commands to drive them (qapi/job.json)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.jobs: dict[str, Job] = {}
        monitor.event("JOB_STATUS_CHANGE", JobStatusChange)
        self._register_commands()

    def start(
        self,
        job_id: str,
        job_type: str,
        run: JobRun,
        *,
        auto_finalize: bool = True,
        auto_dismiss: bool = False,
        on_complete: Callable[[], None] | None = None,
    ) -> Job:
        """Create a job and start it (QEMU: ``job_create`` then ``job_start``).

        Raises QEMU's errors for a malformed or taken ID. ``on_complete`` is what
        ``job-complete`` does for a job that waits in ``ready``.
        """
        if not is_well_formed_id(job_id):
            raise QMPError(f"Invalid job ID '{job_id}'")
        if job_id in self.jobs:
            raise QMPError(f"Job ID '{job_id}' already in use")
        job = Job(
            self,
            job_id,
            job_type,
            auto_finalize=auto_finalize,
            auto_dismiss=auto_dismiss,
            on_complete=on_complete,
        )
        self.jobs[job_id] = job
        job._transition(JobStatus.CREATED)
        job._transition(JobStatus.RUNNING)
        job._task = asyncio.get_running_loop().create_task(job._run(run), name=f"job:{job_id}")
        return job

    def find(self, job_id: str) -> Job:
        """The job called ``job_id``, or QEMU's error (job-qmp.c ``find_job_locked``)."""
        job = self.jobs.get(job_id)
        if job is None:
            raise QMPError("Job not found")
        return job

    def query(self) -> list[JobInfo]:
        """``query-jobs``: newest first, as QEMU lists them."""
        return [job.info() for job in reversed(self.jobs.values())]

    async def close(self) -> None:
        """Cancel every job still running and wait for them to conclude."""
        running = [job for job in self.jobs.values() if job.status not in COMPLETED_STATES]
        for job in running:
            if job._task is not None:
                job._task.cancel()
        for job in running:
            if job._task is not None:
                await asyncio.gather(job._task, return_exceptions=True)

    def _status_changed(self, job: Job, previous: JobStatus) -> None:
        """``JOB_STATUS_CHANGE`` for clients, ``job.<status>`` for the trace path."""
        self.monitor.emit("JOB_STATUS_CHANGE", {"id": job.id, "status": job.status.value})
        info: dict[str, object] = {
            "id": job.id,
            "type": job.type,
            "status": job.status.value,
            "previous": previous.value,
        }
        if job.error is not None:
            info["error"] = job.error
        self.monitor.trace(f"job.{job.status.value}", info)

    def _dismiss(self, job: Job) -> None:
        job._transition(JobStatus.NULL)
        self.jobs.pop(job.id, None)

    def _register_commands(self) -> None:
        command = self.monitor.command

        @command(name="query-jobs")
        def query_jobs() -> list[JobInfo]:
            """Return information on all jobs."""
            return self.query()

        @command(name="job-pause")
        def job_pause(id: str) -> None:
            """Pause an active job at its next pause point."""
            self.find(id).user_pause()

        @command(name="job-resume")
        def job_resume(id: str) -> None:
            """Resume a job paused with job-pause."""
            self.find(id).user_resume()

        @command(name="job-cancel")
        def job_cancel(id: str) -> None:
            """Cancel a job; it concludes with an error."""
            self.find(id).user_cancel()

        @command(name="job-complete")
        def job_complete(id: str) -> None:
            """Manually trigger completion of a job in the ready state."""
            self.find(id).user_complete()

        @command(name="job-finalize")
        def job_finalize(id: str) -> None:
            """Finalize a pending job (one started without auto-finalize)."""
            self.find(id).user_finalize()

        @command(name="job-dismiss")
        def job_dismiss(id: str) -> None:
            """Forget a concluded job; it disappears from query-jobs."""
            self.find(id).user_dismiss()
