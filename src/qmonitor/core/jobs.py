"""QEMU's job state machine, as tables (job.c ``JobSTT`` and ``JobVerbTable``); no I/O.

A job (qapi/job.json) moves through these states; every move is checked against
:data:`TRANSITIONS` and every user command ("verb") against :data:`VERBS`, exactly as QEMU 7.2
does in ``job_state_transition_locked`` and ``job_apply_verb_locked``::

    created ──▶ running ──▶ waiting ──▶ pending ──▶ concluded ──▶ null
       │          │  ▲         │           │            ▲
       │          ▼  │         │           ▼            │
       │        paused         └───────▶ aborting ──────┘
       │          ready ◀─▶ standby          ▲
       └──────────────────────────────────────┘  (any state that may be cancelled)

A successful job goes created → running → waiting → pending → concluded (→ null when it is
dismissed, automatically or by ``job-dismiss``); a failed or cancelled one goes through
``aborting`` to ``concluded``. A job that needs ``job-complete`` (QEMU's mirror) waits in
``ready``; a paused ready job is in ``standby``.

The error texts are QEMU's (checked against QEMU 7.2.22, see tests/test_jobs.py).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from qmonitor.core.errors import QMPError, StateError


class JobStatus(StrEnum):
    """qapi/job.json ``JobStatus``; ``undefined`` is the state before creation."""

    UNDEFINED = "undefined"  # not yet created; never seen by clients
    CREATED = "created"  # created, not started
    RUNNING = "running"  # doing its work
    PAUSED = "paused"  # paused at a pause point (job-pause, or an internal pause)
    READY = "ready"  # work done, waiting for job-complete (and still running)
    STANDBY = "standby"  # paused while ready
    WAITING = "waiting"  # finished, waiting for the other jobs of its transaction
    PENDING = "pending"  # finished, waiting for job-finalize (or auto-finalize)
    ABORTING = "aborting"  # failed or cancelled, cleaning up
    CONCLUDED = "concluded"  # over; its outcome can be queried until it is dismissed
    NULL = "null"  # dismissed: gone from query-jobs


class JobVerb(StrEnum):
    """qapi/job.json ``JobVerb`` as of QEMU 7.2 (``change`` came in 8.2)."""

    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    SET_SPEED = "set-speed"
    COMPLETE = "complete"
    FINALIZE = "finalize"
    DISMISS = "dismiss"


_S = JobStatus

TRANSITIONS: Final[dict[JobStatus, frozenset[JobStatus]]] = {
    _S.UNDEFINED: frozenset({_S.CREATED}),
    _S.CREATED: frozenset({_S.RUNNING, _S.ABORTING, _S.NULL}),
    _S.RUNNING: frozenset({_S.PAUSED, _S.READY, _S.WAITING, _S.ABORTING}),
    _S.PAUSED: frozenset({_S.RUNNING}),
    _S.READY: frozenset({_S.STANDBY, _S.WAITING, _S.ABORTING}),
    _S.STANDBY: frozenset({_S.READY}),
    _S.WAITING: frozenset({_S.PENDING, _S.ABORTING}),
    _S.PENDING: frozenset({_S.ABORTING, _S.CONCLUDED}),
    _S.ABORTING: frozenset({_S.ABORTING, _S.CONCLUDED}),
    _S.CONCLUDED: frozenset({_S.NULL}),
    _S.NULL: frozenset(),
}
"""job.c ``JobSTT``: the states each state may move to."""

_CANCELLABLE = frozenset(
    {_S.CREATED, _S.RUNNING, _S.PAUSED, _S.READY, _S.STANDBY, _S.WAITING, _S.PENDING}
)
_PAUSABLE = frozenset({_S.CREATED, _S.RUNNING, _S.PAUSED, _S.READY, _S.STANDBY})

VERBS: Final[dict[JobVerb, frozenset[JobStatus]]] = {
    JobVerb.CANCEL: _CANCELLABLE,
    JobVerb.PAUSE: _PAUSABLE,
    JobVerb.RESUME: _PAUSABLE,
    JobVerb.SET_SPEED: _PAUSABLE,
    JobVerb.COMPLETE: frozenset({_S.READY, _S.STANDBY}),
    JobVerb.FINALIZE: frozenset({_S.PENDING}),
    JobVerb.DISMISS: frozenset({_S.CONCLUDED}),
}
"""job.c ``JobVerbTable``: the states in which each verb is accepted."""

COMPLETED_STATES: Final = frozenset({_S.CONCLUDED, _S.NULL})
"""States whose job has nothing left to do."""


class JobStateError(StateError):
    """A transition the tables forbid was attempted: a bug in the job's driver, not a user error
    (QEMU asserts here)."""


def check_transition(job_id: str, old: JobStatus, new: JobStatus) -> None:
    """Allow ``old`` → ``new`` or raise :class:`JobStateError` (QEMU asserts here)."""
    if new not in TRANSITIONS[old]:
        raise JobStateError(f"job '{job_id}': illegal transition {old} -> {new}")


def check_verb(job_id: str, status: JobStatus, verb: JobVerb) -> None:
    """Raise QEMU's GenericError unless a job in ``status`` accepts ``verb``."""
    if status not in VERBS[verb]:
        raise QMPError(f"Job '{job_id}' in state '{status}' cannot accept command verb '{verb}'")


def is_well_formed_id(job_id: str) -> bool:
    """QEMU's ``id_wellformed`` (util/id.c): a letter, then letters, digits, ``-``, ``.``, ``_``."""
    return (
        bool(job_id)
        and job_id[0].isascii()
        and job_id[0].isalpha()
        and all(c.isascii() and (c.isalnum() or c in "-._") for c in job_id)
    )
