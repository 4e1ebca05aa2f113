"""The job store: one implementation over SQLAlchemy Core for SQLite and PostgreSQL.

A job is queued, then leased by one worker at a time. A lease has an id and an
expiry; the worker renews it with heartbeats. A job whose lease expires goes
back to the queue (or fails after max_attempts). Results and failures are only
accepted from the current lease, so a late or repeated post from a stale
worker never overwrites a newer outcome. Finished jobs expire after the
retention period, and queued jobs no worker took after their own lifetime:
their payload and result are deleted and the status says so.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import sqlalchemy as sa

from app.database import aware, insert_once, jobs, utcnow
from app.ids import time_ordered_id
from app.metrics import JOB_LEASE_EXPIRIES, JOB_LEASES_UNACKNOWLEDGED, JOB_SECONDS

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED, EXPIRED = "queued", "running", "succeeded", "failed", "canceled", "expired"
FINISHED = (SUCCEEDED, FAILED, CANCELED)


class JobNotFound(LookupError):
    """No job with that id."""


class LeaseConflict(Exception):
    """The caller's lease is not the job's current lease (stale, expired or finished)."""


class IdempotencyConflict(Exception):
    """An Idempotency-Key already stands for a different request."""


@dataclass(frozen=True)
class QueueLimits:
    """What may wait, and what may be kept, per client and in total. Bytes count every payload and
    result the store still holds (queued, running, and finished until retention deletes them), so
    cancelling or finishing jobs never frees room that the disk has not got back."""

    jobs_per_client: int
    bytes_per_client: int
    jobs: int
    bytes: int


class QueueLimitReached(Exception):
    """A submission beyond the bounds: ``whole`` when the store's total, not the client's share, is full."""

    def __init__(self, message: str, whole: bool):
        """The message, and whose bound it was."""
        super().__init__(message)
        self.whole = whole


@dataclass
class Lease:
    """What a worker gets: the job and the lease it must quote."""

    job: dict
    lease_id: str
    expires_at: dt.datetime


class JobStore:
    """Queue operations over one SQLAlchemy engine."""

    def __init__(self, engine: sa.Engine, lease_seconds: float = 60, max_attempts: int = 3,
                 retention_seconds: float = 86400, queued_seconds: float = 86400,
                 clock: Callable[[], dt.datetime] = utcnow, ack_seconds: float = 10):
        """Store the engine and the queue settings; ``clock`` gives "now" (tests move it instead of sleeping).
        ``ack_seconds``: how long a lease handed out waits for the worker to acknowledge it (its first heartbeat)
        before the job goes back to the queue, uncounted: a long poll answered on a connection the worker has
        already dropped must not keep the job for a whole lease (0: no acknowledgement asked)."""
        self.engine = engine
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.ack_seconds = ack_seconds
        self.max_attempts = max_attempts
        self.retention = dt.timedelta(seconds=retention_seconds)
        self.queued_ttl = dt.timedelta(seconds=queued_seconds)
        self.postgres = engine.dialect.name == "postgresql"
        # Retention is coarse (hours), so the sweep runs at most this often per process.
        self.sweep_interval = min(60.0, retention_seconds / 10, queued_seconds / 10)
        self._last_sweep = float("-inf")

    # -- clients -----------------------------------------------------------
    def submit(self, model: str, payload: bytes, content_type: str, source: str = "api", client: str | None = None,
               idempotency_key: str | None = None) -> dict:
        """Queue a job and return it."""
        return self.submit_once(model, payload, content_type, source, client, idempotency_key)[0]

    def submit_once(self, model: str, payload: bytes, content_type: str, source: str = "api",
                    client: str | None = None, idempotency_key: str | None = None,
                    limits: QueueLimits | None = None) -> tuple[dict, bool]:
        """Queue a job within ``limits``, or return the one an earlier request with the same idempotency key made.

        Returns (job, created). The key is the client's scope plus its Idempotency-Key; the same
        key with a different request raises IdempotencyConflict.
        """
        digest = hashlib.sha256(b"\0".join([model.encode(), content_type.encode(), payload])).hexdigest()
        now = self.clock()
        row = {"id": time_ordered_id(), "model": model, "status": QUEUED, "payload": payload,
               "content_type": content_type, "attempts": 0, "max_attempts": self.max_attempts,
               "source": source, "client": client, "idempotency_key": idempotency_key,
               "request_hash": digest if idempotency_key else None, "created_at": now, "updated_at": now}
        room = (lambda conn: self._check_room(conn, client, len(payload), limits)) if limits else None
        job_id, created = insert_once(self.engine, jobs, row, lambda: self._by_idempotency_key(idempotency_key, digest),
                                      room)
        return self.get(job_id), created

    def _check_room(self, conn, client: str | None, size: int, limits: QueueLimits) -> None:
        """Raise QueueLimitReached when one more job of ``size`` bytes would pass a bound. Runs in the
        inserting transaction, which holds the write lock (SQLite's BEGIN IMMEDIATE, an advisory lock on
        PostgreSQL), so concurrent submissions cannot all pass the same check."""
        if self.postgres:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7305001)"))
        count, used = self._usage(conn, client)
        if count + 1 > limits.jobs_per_client or used + size > limits.bytes_per_client:
            raise QueueLimitReached(f"you have {count} jobs waiting and {used} bytes of jobs kept, the most one "
                                    "client may have; retry when some have run or expired", whole=False)
        count, used = self._usage(conn, None)
        if count + 1 > limits.jobs or used + size > limits.bytes:
            raise QueueLimitReached("the job queue is full; retry later", whole=True)

    def _by_idempotency_key(self, key: str | None, digest: str) -> str | None:
        """The id of the job an idempotency key made, if any (IdempotencyConflict if it was for another request)."""
        if not key:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs.c.id, jobs.c.request_hash).where(jobs.c.idempotency_key == key)).first()
        if row is None:
            return None
        if row.request_hash != digest:
            raise IdempotencyConflict(key)
        return row.id

    def usage(self, client: str | None = None) -> tuple[int, int]:
        """(jobs waiting, bytes of payloads and results kept in every state), for one client or in total."""
        with self.engine.connect() as conn:
            return self._usage(conn, client)

    @staticmethod
    def _usage(conn, client: str | None) -> tuple[int, int]:
        mine = (jobs.c.client == client) if client is not None else sa.true()
        waiting = sa.select(sa.func.count()).where(jobs.c.status == QUEUED, mine).scalar_subquery()
        kept = sa.select(sa.func.coalesce(sa.func.sum(sa.func.coalesce(sa.func.length(jobs.c.payload), 0)
                                                      + sa.func.coalesce(sa.func.length(jobs.c.result), 0)), 0)) \
            .where(mine).scalar_subquery()
        count, size = conn.execute(sa.select(waiting, kept)).one()
        return int(count), int(size)

    def get(self, job_id: str) -> dict:
        """The job as a dict (expired first if its retention has passed)."""
        if time.monotonic() - self._last_sweep >= self.sweep_interval:
            self.expire_finished()
        row = self._row(job_id)
        if row["status"] == RUNNING and aware(row["lease_expires_at"]) < self.clock():
            # Its worker is gone: show the job requeued (or failed) now, not when some worker next polls.
            with self.engine.begin() as conn:
                self._requeue_expired(conn, self.clock())
            row = self._row(job_id)
        return row

    def _row(self, job_id: str) -> dict:
        """One job's row, times made timezone-aware; JobNotFound when there is none."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        return {k: aware(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}

    def cancel(self, job_id: str) -> dict:
        """Cancel a queued or running job; finished jobs are left as they are."""
        with self.engine.begin() as conn:
            # The payload is deleted at once: nobody will run it, and it must not hold disk for the retention.
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_([QUEUED, RUNNING]))
                         .values(status=CANCELED, lease_id=None, payload=None, finished_at=self.clock(),
                                 updated_at=self.clock()))
        return self.get(job_id)

    # -- workers -----------------------------------------------------------
    def lease(self, worker: str, models: list[str] | None = None, wait_seconds: float = 0,
              poll_interval: float = 0.2, acknowledged: bool = False) -> Lease | None:
        """The oldest queued job for one of ``models``, leased to ``worker``; long-polls up to wait_seconds.
        Unless ``acknowledged`` (a protocol with no heartbeat), the lease lasts ``ack_seconds`` until the
        worker's first heartbeat starts the job."""
        deadline = time.monotonic() + wait_seconds
        while True:
            leased = self._lease_once(worker, models, acknowledged or not self.ack_seconds)
            if leased is not None or time.monotonic() >= deadline:
                return leased
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))

    def _lease_once(self, worker: str, models: list[str] | None, started: bool) -> Lease | None:
        """One atomic attempt: requeue expired leases, then claim the oldest queued job."""
        now = self.clock()
        lease_id = uuid.uuid4().hex  # a token the worker echoes back: all random, nothing indexes it
        expires = now + dt.timedelta(seconds=self.lease_seconds if started else min(self.ack_seconds, self.lease_seconds))
        with self.engine.begin() as conn:
            self._requeue_expired(conn, now)
            query = sa.select(jobs.c.id).where(jobs.c.status == QUEUED).order_by(jobs.c.created_at, jobs.c.id).limit(1)
            if models:
                query = query.where(jobs.c.model.in_(models))
            if self.postgres:
                query = query.with_for_update(skip_locked=True)
            job_id = conn.execute(query).scalar()
            if job_id is None:
                return None
            updated = conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status == QUEUED)
                .values(status=RUNNING, lease_id=lease_id, lease_expires_at=expires, worker=worker,
                        attempts=jobs.c.attempts + 1, started_at=now if started else None, updated_at=now)
            ).rowcount
            if updated != 1:
                return None
        return Lease(self.get(job_id), lease_id, expires)

    def _requeue_expired(self, conn, now: dt.datetime) -> None:
        """Running jobs whose lease ran out: back to the queue, or failed after max_attempts. A lease no worker
        acknowledged goes back without counting as an attempt (the worker never had the job)."""
        stale = sa.and_(jobs.c.status == RUNNING, jobs.c.lease_expires_at < now)
        unstarted = conn.execute(sa.update(jobs).where(stale, jobs.c.started_at.is_(None)).values(
            status=QUEUED, lease_id=None, worker=None, attempts=jobs.c.attempts - 1, updated_at=now)).rowcount
        if unstarted:
            JOB_LEASES_UNACKNOWLEDGED.inc(unstarted)
        failed = conn.execute(sa.update(jobs).where(stale, jobs.c.attempts >= jobs.c.max_attempts).values(
            status=FAILED, lease_id=None, finished_at=now, updated_at=now,
            error=sa.literal("lease expired on every attempt (worker lost or too slow); attempts: ")
            + sa.cast(jobs.c.attempts, sa.String))).rowcount
        requeued = conn.execute(sa.update(jobs).where(stale).values(status=QUEUED, lease_id=None, updated_at=now)).rowcount
        if failed + requeued:
            JOB_LEASE_EXPIRIES.inc(failed + requeued)

    def heartbeat(self, job_id: str, lease_id: str) -> dt.datetime:
        """Extend a live lease (the first heartbeat acknowledges it: the job starts); LeaseConflict if it is not
        the current one."""
        now = self.clock()
        expires = now + dt.timedelta(seconds=self.lease_seconds)
        with self.engine.begin() as conn:
            updated = conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, jobs.c.lease_id == lease_id, jobs.c.status == RUNNING,
                                      jobs.c.lease_expires_at >= now)
                .values(lease_expires_at=expires, updated_at=now, started_at=sa.func.coalesce(jobs.c.started_at, now))
            ).rowcount
        if updated != 1:
            self._raise_conflict(job_id, lease_id)
        return expires

    def complete(self, job_id: str, lease_id: str, result: bytes, content_type: str) -> tuple[dict, bool]:
        """Record a result; returns (job, newly_recorded). A repeat from the same lease is accepted idempotently."""
        return self._finish(job_id, lease_id, SUCCEEDED, {"result": result, "result_content_type": content_type})

    def fail(self, job_id: str, lease_id: str, reason: str, retry: bool = True) -> tuple[dict, bool]:
        """Record a failure: requeued while attempts remain (and retry is true), else failed."""
        now = self.clock()
        if retry:
            with self.engine.begin() as conn:
                updated = conn.execute(
                    sa.update(jobs).where(jobs.c.id == job_id, jobs.c.lease_id == lease_id,
                                          jobs.c.status == RUNNING, jobs.c.attempts < jobs.c.max_attempts)
                    .values(status=QUEUED, lease_id=None, error=reason, updated_at=now)
                ).rowcount
            if updated == 1:
                return self.get(job_id), True
        return self._finish(job_id, lease_id, FAILED, {"error": reason})

    def _finish(self, job_id: str, lease_id: str, status: str, values: dict) -> tuple[dict, bool]:
        """Move a job from RUNNING under this lease to a final status, exactly once."""
        now = self.clock()
        with self.engine.begin() as conn:
            updated = conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, jobs.c.lease_id == lease_id, jobs.c.status == RUNNING)
                .values(status=status, finished_at=now, updated_at=now, **values)
            ).rowcount
        job = self.get(job_id)
        if updated == 1:
            JOB_SECONDS.labels(status).observe((job["finished_at"] - job["created_at"]).total_seconds())
            return job, True
        if job["lease_id"] == lease_id and job["status"] == status:
            return job, False  # the same worker posting the same outcome again
        self._raise_conflict(job_id, lease_id, job)
        raise AssertionError("unreachable")

    def _raise_conflict(self, job_id: str, lease_id: str, job: dict | None = None) -> None:
        """Explain why a lease is not (or no longer) valid."""
        job = job or self.get(job_id)
        if job["status"] in FINISHED or job["status"] == EXPIRED:
            raise LeaseConflict(f"job {job_id} is already {job['status']}; this lease's post was ignored")
        if job["lease_id"] != lease_id:
            raise LeaseConflict(f"lease {lease_id} is no longer the lease of job {job_id} (it expired and the job "
                                f"was handed out again); this post was ignored")
        raise LeaseConflict(f"lease {lease_id} of job {job_id} has expired")

    # -- housekeeping ---------------------------------------------------------
    def expire_finished(self) -> int:
        """Drop payloads and results of jobs finished longer ago than the retention, and of queued
        jobs no worker took within the queued lifetime (a model nobody serves); returns how many."""
        self._last_sweep = time.monotonic()
        now = self.clock()
        with self.engine.begin() as conn:
            self._requeue_expired(conn, now)  # counts and listings see lost workers' jobs without a lease poll
            finished = conn.execute(
                sa.update(jobs).where(jobs.c.status.in_(FINISHED), jobs.c.finished_at < now - self.retention)
                .values(status=EXPIRED, payload=None, result=None, updated_at=now)
            ).rowcount
            unclaimed = conn.execute(
                sa.update(jobs).where(jobs.c.status == QUEUED, jobs.c.created_at < now - self.queued_ttl)
                .values(status=EXPIRED, payload=None, finished_at=now, updated_at=now,
                        error=f"no worker took the job within {int(self.queued_ttl.total_seconds())} s")
            ).rowcount
        return finished + unclaimed

    def counts_by_model(self) -> dict[tuple[str, str], int]:
        """Number of jobs by (model, status)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs.c.model, jobs.c.status, sa.func.count())
                                .group_by(jobs.c.model, jobs.c.status)).all()
        return {(model, status): count for model, status, count in rows}

    def counts(self) -> dict[str, int]:
        """Number of jobs by status."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)).all()
        return {status: count for status, count in rows}
