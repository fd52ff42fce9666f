"""The job state machine (QEMU's job.c tables) and the JobManager's commands and events."""

from __future__ import annotations

import asyncio

import pytest

from qmonitor import Monitor, QMPError
from qmonitor.core.events import Event
from qmonitor.core.jobs import (
    TRANSITIONS,
    VERBS,
    JobStateError,
    JobStatus,
    JobVerb,
    check_transition,
    check_verb,
    is_well_formed_id,
)
from qmonitor.server.jobs import CANCELLED_ERROR, Job, JobManager

S = JobStatus

# QEMU 7.2 job.c JobSTT, row by row, in the column order U C R P Y S W D X E N.
_COLUMNS = [S.UNDEFINED, S.CREATED, S.RUNNING, S.PAUSED, S.READY, S.STANDBY, S.WAITING,
            S.PENDING, S.ABORTING, S.CONCLUDED, S.NULL]  # fmt: skip
_JOB_STT = {
    S.UNDEFINED: "0 1 0 0 0 0 0 0 0 0 0",
    S.CREATED: "0 0 1 0 0 0 0 0 1 0 1",
    S.RUNNING: "0 0 0 1 1 0 1 0 1 0 0",
    S.PAUSED: "0 0 1 0 0 0 0 0 0 0 0",
    S.READY: "0 0 0 0 0 1 1 0 1 0 0",
    S.STANDBY: "0 0 0 0 1 0 0 0 0 0 0",
    S.WAITING: "0 0 0 0 0 0 0 1 1 0 0",
    S.PENDING: "0 0 0 0 0 0 0 0 1 1 0",
    S.ABORTING: "0 0 0 0 0 0 0 0 1 1 0",
    S.CONCLUDED: "0 0 0 0 0 0 0 0 0 0 1",
    S.NULL: "0 0 0 0 0 0 0 0 0 0 0",
}
_JOB_VERB_TABLE = {
    JobVerb.CANCEL: "0 1 1 1 1 1 1 1 0 0 0",
    JobVerb.PAUSE: "0 1 1 1 1 1 0 0 0 0 0",
    JobVerb.RESUME: "0 1 1 1 1 1 0 0 0 0 0",
    JobVerb.SET_SPEED: "0 1 1 1 1 1 0 0 0 0 0",
    JobVerb.COMPLETE: "0 0 0 0 1 1 0 0 0 0 0",
    JobVerb.FINALIZE: "0 0 0 0 0 0 0 1 0 0 0",
    JobVerb.DISMISS: "0 0 0 0 0 0 0 0 0 1 0",
}


def _row(bits: str) -> set[JobStatus]:
    return {column for column, bit in zip(_COLUMNS, bits.split(), strict=True) if bit == "1"}


def test_transition_table_is_qemus_job_stt() -> None:
    assert {state: set(targets) for state, targets in TRANSITIONS.items()} == {
        state: _row(bits) for state, bits in _JOB_STT.items()
    }


def test_verb_table_is_qemus_job_verb_table() -> None:
    assert {verb: set(states) for verb, states in VERBS.items()} == {
        verb: _row(bits) for verb, bits in _JOB_VERB_TABLE.items()
    }


def test_forbidden_transition_is_a_bug_not_a_user_error() -> None:
    with pytest.raises(JobStateError):
        check_transition("j", S.CONCLUDED, S.RUNNING)


def test_refused_verb_has_qemus_text() -> None:
    with pytest.raises(QMPError) as info:
        check_verb("s1", S.CONCLUDED, JobVerb.PAUSE)
    assert info.value.desc == "Job 's1' in state 'concluded' cannot accept command verb 'pause'"


@pytest.mark.parametrize(
    ("job_id", "ok"),
    [("s1", True), ("a-b.c_d", True), ("1bad", False), ("", False), ("a b", False), ("é", False)],
)
def test_job_ids_follow_qemus_id_wellformed(job_id: str, ok: bool) -> None:
    assert is_well_formed_id(job_id) is ok


class Recorder:
    """A monitor with a JobManager, recording JOB_STATUS_CHANGE as (id, status)."""

    def __init__(self) -> None:
        self.monitor = Monitor("jobs-test")
        self.jobs = JobManager(self.monitor)
        self.changes: list[tuple[str, str]] = []
        self.monitor.add_event_listener(self._heard)

    def _heard(self, event: Event) -> None:
        if event.name == "JOB_STATUS_CHANGE":
            assert event.data is not None
            self.changes.append((event.data["id"], event.data["status"]))

    def statuses(self, job_id: str) -> list[str]:
        return [status for changed_id, status in self.changes if changed_id == job_id]

    def call(self, command: str, **arguments: object) -> object:
        found = self.monitor.registry.get(command)
        assert found is not None
        return found.handler(**found.signature.convert_arguments(arguments))


async def test_successful_job_goes_through_qemus_states_once_each() -> None:
    recorder = Recorder()

    async def work(job: Job) -> None:
        job.progress(1, 1)

    job = recorder.jobs.start("s1", "snapshot-save", work)
    await job.wait()
    assert recorder.statuses("s1") == ["created", "running", "waiting", "pending", "concluded"]
    info = recorder.call("query-jobs")
    assert [(i.id, i.type, i.status, i.current_progress, i.error) for i in info] == [  # type: ignore[attr-defined]
        ("s1", "snapshot-save", S.CONCLUDED, 1, None)
    ]
    recorder.call("job-dismiss", id="s1")
    assert recorder.statuses("s1")[-1] == "null"
    assert recorder.call("query-jobs") == []


async def test_failed_job_aborts_and_keeps_its_error_until_dismissed() -> None:
    recorder = Recorder()

    async def work(job: Job) -> None:
        raise QMPError("At least one device is required for snapshot")

    job = recorder.jobs.start("s1", "snapshot-save", work)
    await job.wait()
    assert recorder.statuses("s1") == ["created", "running", "aborting", "concluded"]
    assert job.error == "At least one device is required for snapshot"
    with pytest.raises(QMPError, match="cannot accept command verb 'finalize'"):
        recorder.call("job-finalize", id="s1")


async def test_cancelled_job_concludes_with_operation_canceled() -> None:
    recorder = Recorder()
    started = asyncio.Event()

    async def work(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    job = recorder.jobs.start("j", "snapshot-save", work)
    await started.wait()
    recorder.call("job-cancel", id="j")
    await job.wait()
    assert recorder.statuses("j") == ["created", "running", "aborting", "concluded"]
    assert job.error == CANCELLED_ERROR == "Operation canceled"


async def test_pause_lands_at_the_pause_point_and_resume_continues() -> None:
    recorder = Recorder()
    steps: list[int] = []
    at_point = asyncio.Event()
    go_on = asyncio.Event()

    async def work(job: Job) -> None:
        at_point.set()
        await go_on.wait()
        await job.pause_point()
        steps.append(1)

    job = recorder.jobs.start("j", "x", work)
    await at_point.wait()
    recorder.call("job-pause", id="j")
    with pytest.raises(QMPError, match=r"^Job is already paused$"):
        recorder.call("job-pause", id="j")
    go_on.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert job.status is S.PAUSED and steps == []
    recorder.call("job-resume", id="j")
    await job.wait()
    assert steps == [1]
    assert recorder.statuses("j")[:4] == ["created", "running", "paused", "running"]
    with pytest.raises(QMPError, match=r"^Can't resume a job that was not paused$"):
        recorder.call("job-resume", id="j")


async def test_cancelling_a_paused_job_unpauses_it_first() -> None:
    recorder = Recorder()

    async def work(job: Job) -> None:
        while True:
            await job.pause_point()

    job = recorder.jobs.start("j", "x", work)
    recorder.call("job-pause", id="j")
    while job.status is not S.PAUSED:
        await asyncio.sleep(0)
    recorder.call("job-cancel", id="j")
    await job.wait()
    assert recorder.statuses("j") == [
        "created", "running", "paused", "running", "aborting", "concluded",
    ]  # fmt: skip


async def test_ready_job_completes_on_job_complete() -> None:
    recorder = Recorder()
    completed = asyncio.Event()

    async def work(job: Job) -> None:
        job.set_ready()
        await completed.wait()

    job = recorder.jobs.start("m", "mirror", work, on_complete=completed.set)
    with pytest.raises(QMPError, match=r"^Job 'm' in state 'running' cannot accept"):
        recorder.call("job-complete", id="m")
    await asyncio.sleep(0)
    recorder.call("job-complete", id="m")
    await job.wait()
    assert recorder.statuses("m") == [
        "created", "running", "ready", "waiting", "pending", "concluded",
    ]  # fmt: skip


async def test_ready_job_without_completion_cannot_be_completed() -> None:
    recorder = Recorder()

    async def work(job: Job) -> None:
        job.set_ready()
        await asyncio.Event().wait()

    job = recorder.jobs.start("m", "x", work)
    await asyncio.sleep(0)
    with pytest.raises(QMPError, match=r"^The active block job 'm' cannot be completed$"):
        recorder.call("job-complete", id="m")
    recorder.call("job-cancel", id="m")
    await job.wait()


async def test_manual_finalize_holds_the_job_pending() -> None:
    recorder = Recorder()

    async def work(job: Job) -> None:
        return None

    job = recorder.jobs.start("j", "x", work, auto_finalize=False)
    for _ in range(5):
        await asyncio.sleep(0)
    assert job.status is S.PENDING
    recorder.call("job-finalize", id="j")
    await job.wait()
    assert job.status is S.CONCLUDED


async def test_auto_dismissed_job_disappears() -> None:
    recorder = Recorder()

    async def work(job: Job) -> None:
        return None

    job = recorder.jobs.start("j", "x", work, auto_dismiss=True)
    await job.wait()
    assert recorder.statuses("j")[-2:] == ["concluded", "null"]
    assert recorder.call("query-jobs") == []


async def test_job_ids_are_checked_with_qemus_texts() -> None:
    recorder = Recorder()

    async def work(job: Job) -> None:
        await asyncio.Event().wait()

    recorder.jobs.start("s1", "x", work)
    with pytest.raises(QMPError, match=r"^Job ID 's1' already in use$"):
        recorder.jobs.start("s1", "x", work)
    with pytest.raises(QMPError, match=r"^Invalid job ID '1bad'$"):
        recorder.jobs.start("1bad", "x", work)
    with pytest.raises(QMPError, match=r"^Job not found$"):
        recorder.call("job-pause", id="nope")
    await recorder.jobs.close()


async def test_query_jobs_lists_newest_first_like_qemu() -> None:
    recorder = Recorder()

    async def work(job: Job) -> None:
        return None

    for job_id in ("a", "b", "c"):
        await recorder.jobs.start(job_id, "x", work).wait()
    assert [info.id for info in recorder.call("query-jobs")] == ["c", "b", "a"]  # type: ignore[attr-defined]
