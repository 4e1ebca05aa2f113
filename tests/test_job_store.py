"""The job store on SQLite and PostgreSQL: leasing, expiry, retries, idempotent results, retention."""
import datetime as dt
import re
import threading
import time
import uuid

import pytest

from app.database import make_engine
from app.jobs.store import JobStore, LeaseConflict, utcnow
from app.migrations import upgrade_database


class Clock:
    """A clock the tests move forward instead of sleeping."""

    def __init__(self):
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float):
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


def make_store(database_url, clock, ack_seconds: float):
    """A fresh store on the test database; yields it, then closes its engine."""
    engine = make_engine(database_url)
    upgrade_database(engine)
    yield JobStore(engine, lease_seconds=30, max_attempts=2, retention_seconds=3600, clock=clock,
                   ack_seconds=ack_seconds)
    engine.dispose()


@pytest.fixture
def store(database_url, clock):
    """Leases start at once here (ack_seconds=0); the acknowledgement has its own tests below."""
    yield from make_store(database_url, clock, 0)


@pytest.fixture
def acking_store(database_url, clock):
    """A store whose leases wait 5 s for the worker's acknowledgement (its first heartbeat)."""
    yield from make_store(database_url, clock, 5)


def test_a_lease_nobody_acknowledges_goes_back_quickly_and_uncounted(acking_store, clock):
    job = acking_store.submit("m", b"x", "text/plain")
    lost = acking_store.lease("gone-worker")  # answered on a connection its worker had already dropped
    assert lost.job["attempts"] == 1 and acking_store.get(job["id"])["started_at"] is None
    clock.advance(4)
    assert acking_store.lease("other") is None  # still within the acknowledgement window
    clock.advance(2)
    again = acking_store.lease("other")
    assert again.job["id"] == job["id"] and again.job["attempts"] == 1  # the lost hand-out did not count
    acking_store.heartbeat(job["id"], again.lease_id)  # acknowledged: the job starts, the lease is full length
    started = acking_store.get(job["id"])
    assert started["started_at"] == clock.now and started["worker"] == "other"
    clock.advance(20)
    assert acking_store.lease("third") is None  # a started job keeps its lease
    with pytest.raises(LeaseConflict):
        acking_store.complete(job["id"], lost.lease_id, b"late", "text/plain")
    done, _ = acking_store.complete(job["id"], again.lease_id, b"ok", "text/plain")
    assert done["status"] == "succeeded" and done["attempts"] == 1


def test_a_job_whose_worker_never_acknowledges_is_never_failed_for_it(acking_store, clock):
    job = acking_store.submit("m", b"x", "text/plain")
    for _ in range(5):  # more hand-outs than max_attempts, none acknowledged
        assert acking_store.lease("flaky").job["id"] == job["id"]
        clock.advance(6)
    assert acking_store.lease("steady").job["attempts"] == 1


def test_submit_lease_complete(store):
    job = store.submit("m", b"payload", "text/plain")
    assert job["status"] == "queued"
    lease = store.lease("w1")
    assert lease.job["id"] == job["id"] and lease.job["status"] == "running" and lease.job["attempts"] == 1
    done, recorded = store.complete(job["id"], lease.lease_id, b'{"ok": 1}', "application/json")
    assert recorded and done["status"] == "succeeded" and done["result"] == b'{"ok": 1}'
    assert store.lease("w1") is None


def test_oldest_first_and_model_filter(store):
    first = store.submit("a", b"1", "text/plain")
    store.submit("b", b"2", "text/plain")
    assert store.lease("w", ["b"]).job["model"] == "b"
    assert store.lease("w", ["a", "b"]).job["id"] == first["id"]


def test_job_ids_sort_in_time_order_and_leases_stay_random(store):
    """Job ids grow with time (the jobs table's key then grows at its end); a lease id, which a worker echoes back,
    stays all random."""
    ids = []
    for payload in (b"1", b"2", b"3"):
        ids.append(store.submit("m", payload, "text/plain")["id"])
        time.sleep(0.002)
    assert ids == sorted(ids) and all(re.fullmatch(r"[0-9a-f]{32}", job_id) for job_id in ids)
    assert abs(int(ids[-1][:12], 16) / 1000 - time.time()) < 5
    leases = [store.lease("w").lease_id for _ in ids]
    assert all(uuid.UUID(lease).version == 4 for lease in leases)


def test_concurrent_leasers_never_share_a_job(store):
    ids = {store.submit("m", b"x", "text/plain")["id"] for _ in range(60)}
    got, lock = [], threading.Lock()

    def take():
        while (lease := store.lease(threading.current_thread().name)) is not None:
            with lock:
                got.append(lease.job["id"])

    threads = [threading.Thread(target=take, name=f"w{i}") for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == 60 and set(got) == ids


def test_expired_lease_requeues_and_stale_result_is_refused(store, clock):
    job = store.submit("m", b"x", "text/plain")
    old = store.lease("slow-worker")
    clock.advance(31)
    new = store.lease("fast-worker")
    assert new.job["id"] == job["id"] and new.job["attempts"] == 2
    with pytest.raises(LeaseConflict, match="no longer the lease"):
        store.heartbeat(job["id"], old.lease_id)
    store.complete(job["id"], new.lease_id, b"new", "text/plain")
    with pytest.raises(LeaseConflict, match="already succeeded"):
        store.complete(job["id"], old.lease_id, b"old", "text/plain")
    assert store.get(job["id"])["result"] == b"new"


def test_fails_after_max_attempts_with_reason(store, clock):
    job = store.submit("m", b"x", "text/plain")
    store.lease("w")
    clock.advance(31)
    store.lease("w")
    clock.advance(31)
    assert store.lease("w") is None
    failed = store.get(job["id"])
    assert failed["status"] == "failed" and "lease expired" in failed["error"]


def test_worker_failure_retries_then_fails(store):
    job = store.submit("m", b"x", "text/plain")
    lease = store.lease("w")
    requeued, _ = store.fail(job["id"], lease.lease_id, "out of memory")
    assert requeued["status"] == "queued" and requeued["error"] == "out of memory"
    lease = store.lease("w")
    failed, _ = store.fail(job["id"], lease.lease_id, "out of memory again")
    assert failed["status"] == "failed"


def test_repeated_result_is_idempotent(store):
    job = store.submit("m", b"x", "text/plain")
    lease = store.lease("w")
    _, first = store.complete(job["id"], lease.lease_id, b"r", "text/plain")
    again, second = store.complete(job["id"], lease.lease_id, b"r", "text/plain")
    assert first is True and second is False and again["result"] == b"r"


def test_canceled_job_refuses_results(store):
    job = store.submit("m", b"x", "text/plain")
    lease = store.lease("w")
    assert store.cancel(job["id"])["status"] == "canceled"
    with pytest.raises(LeaseConflict, match="already canceled"):
        store.complete(job["id"], lease.lease_id, b"r", "text/plain")


def test_finished_jobs_expire_after_retention(store, clock):
    store.sweep_interval = 0
    job = store.submit("m", b"x", "text/plain")
    lease = store.lease("w")
    store.complete(job["id"], lease.lease_id, b"r", "text/plain")
    clock.advance(3601)
    expired = store.get(job["id"])
    assert expired["status"] == "expired" and expired["payload"] is None and expired["result"] is None


def test_a_lost_worker_s_job_reads_requeued_without_a_lease_poll(store, clock):
    job = store.submit("m", b"x", "text/plain")
    store.lease("worker-that-dies", ["m"])
    assert store.get(job["id"])["status"] == "running"
    clock.advance(31)  # the lease ran out; no worker has asked for work since
    again = store.get(job["id"])
    assert again["status"] == "queued" and again["lease_id"] is None


def test_the_migrations_build_the_schema_the_code_declares_and_keep_logged_rows(database_url, tmp_path):
    """Alembic finds nothing to change between the migrated database and app/db.py's tables; and on SQLite, a
    prediction logged at revision 0004 survives the step to 0005 (its item is 0)."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from app.database import make_engine, metadata
    from app.migrations import alembic_config

    engine = make_engine(database_url)
    upgrade_database(engine)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert differences == []
    engine.dispose()

    old = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    command.upgrade(alembic_config(old), "0004")
    with old.begin() as conn:
        conn.exec_driver_sql("INSERT INTO predictions (model, version, created_at, latency_ms, protocol, request_id, "
                             "features) VALUES ('m', '1', '2026-12-01 00:00:00', 1.5, 'rest', 'r1', '{}')")
    upgrade_database(old)
    with old.connect() as conn:
        assert conn.exec_driver_sql("SELECT request_id, item FROM predictions").all() == [("r1", 0)]
    old.dispose()
