"""Backpressure: a bounded number of inference requests per model and worker, and a deadline.

Inference is CPU-bound, so a worker gains nothing from working on many
requests at once; letting them all in only makes every one of them slow.
Each worker therefore lets at most MAX_INFLIGHT inference requests for one model
in at a time (each model predicts one batch at a time, merging the requests let in
that wait for it: app/models/batching.py) and lets at most MAX_QUEUED more
wait for a slot. Every model has its own slots and queue, so a slow or stuck model
can fill only its own; and a request takes a slot only once its whole body has
arrived (a slow client holds a connection, never a slot). A request that finds the
queue full, or that would wait past its deadline, is answered at once with
503 and a Retry-After header, so a load balancer or client can go elsewhere
or back off instead of piling up behind a queue without bound.

The deadline is REQUEST_DEADLINE_SECONDS after the request reached the app;
a client can ask for a shorter one with the header ``X-Request-Timeout``
(seconds). It bounds the wait for a slot: a running inference is never cut
off (gunicorn's worker timeout is the last resort for that).
"""
from __future__ import annotations

import functools
import math
import threading
import time
from collections import deque
from contextlib import contextmanager

from flask import current_app, g, request
from prometheus_client import Counter, Gauge

from app.errors import APIError, BadRequest
from app.models import batching

SHED = Counter("modelserve_requests_shed_total", "Inference requests answered 503 by backpressure", ["reason"])
QUEUED = Gauge("modelserve_inference_queued", "Inference requests waiting for a slot", multiprocess_mode="livesum")
# Readiness reports "overloaded" for this long after a request was shed.
OVERLOAD_MEMORY_SECONDS = 1.0


class Overloaded(APIError):
    """Too much work in this worker right now; the client should retry later."""

    status = 503

    def __init__(self, message: str, retry_after: int, **extra):
        """Keep the Retry-After seconds for the response header."""
        super().__init__(message, retry_after=retry_after, retry_after_seconds=retry_after, **extra)


class AdmissionGate:
    """Per-worker slots for inference requests, with a bounded first-come-first-served wait queue.

    A freed slot is handed straight to the oldest waiter, so nobody is overtaken
    and a request's wait is about its place in the queue times the service time.
    """

    def __init__(self, max_inflight: int, max_queued: int, deadline_seconds: float, shed_delay_seconds: float = 0.0):
        """Store the bounds; max_inflight must be at least 1."""
        if max_inflight < 1 or max_queued < 0 or deadline_seconds <= 0 or shed_delay_seconds < 0:
            raise ValueError("need max_inflight >= 1, max_queued >= 0, a positive deadline, shed delay >= 0")
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.deadline_seconds = deadline_seconds
        self.shed_delay_seconds = shed_delay_seconds
        self._lock = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self.running = 0
        self._last_shed = -math.inf
        self._service_seconds = 0.0  # moving average of one admitted request's time, for Retry-After
        self.arrivals = batching.Arrivals()  # admitted requests that have not reached their model yet

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return len(self._waiters)

    @property
    def overloaded(self) -> bool:
        """True while the queue is full or a request was shed in the last second."""
        queue_full = self.queued >= self.max_queued and self.running >= self.max_inflight
        return queue_full or time.monotonic() - self._last_shed < OVERLOAD_MEMORY_SECONDS

    def retry_after(self) -> int:
        """Seconds a shed client should wait: about the time to drain the queue, at least 1."""
        backlog = (self.queued + self.running) / self.max_inflight
        return max(1, math.ceil(backlog * self._service_seconds))

    def _shed(self, reason: str, message: str) -> Overloaded:
        """Record a refusal and build its error."""
        self._last_shed = time.monotonic()
        SHED.labels(reason).inc()
        return Overloaded(message, self.retry_after(), reason=reason)

    def _acquire(self, timeout: float) -> bool | None:
        """Take a slot (True), give up at the timeout (False), or None when the queue is full."""
        with self._lock:
            if self.running < self.max_inflight and not self._waiters:
                self.running += 1
                return True
            if len(self._waiters) >= self.max_queued:
                return None
            turn = threading.Event()
            self._waiters.append(turn)
        QUEUED.inc()
        try:
            if turn.wait(max(0.0, timeout)):
                return True
            with self._lock:
                if turn.is_set():  # handed a slot just as the wait timed out
                    return True
                self._waiters.remove(turn)
                return False
        finally:
            QUEUED.dec()

    def _release(self, elapsed: float) -> None:
        """Hand the slot to the oldest waiter, or free it."""
        with self._lock:
            self._service_seconds = 0.9 * self._service_seconds + 0.1 * elapsed if self._service_seconds else elapsed
            if self._waiters:
                self._waiters.popleft().set()  # the slot passes on: `running` is unchanged
            else:
                self.running -= 1

    @contextmanager
    def admit(self, started: float, deadline_seconds: float):
        """Hold a slot for the body of the with-block, or raise Overloaded.

        `started` is the request's arrival (time.perf_counter()); the wait for
        a slot ends at started + deadline_seconds.
        """
        acquired = self._acquire(started + deadline_seconds - time.perf_counter())
        if acquired is None:
            # Answer a little later: a client that retries at once would otherwise spend the
            # worker's CPU on refusals instead of on the requests it is running.
            time.sleep(self.shed_delay_seconds)
            raise self._shed("queue_full", f"server busy: {self.running} requests running and "
                                           f"{self.queued} waiting in this worker")
        if not acquired:
            raise self._shed("deadline", f"no inference slot free within the {deadline_seconds:g} s deadline")
        began = time.perf_counter()
        try:
            yield
        finally:
            self._release(time.perf_counter() - began)


def request_deadline(limit: float) -> float:
    """This request's deadline in seconds: `limit` (the gate's), or a shorter X-Request-Timeout."""
    asked = request.headers.get("X-Request-Timeout")
    if asked is None:
        return limit
    try:
        value = float(asked)
    except ValueError:
        raise BadRequest("X-Request-Timeout must be a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise BadRequest("X-Request-Timeout must be a positive number of seconds")
    return min(value, limit)


class AdmissionGates:
    """One AdmissionGate per model, made on first use; names the worker does not serve share one gate."""

    UNKNOWN = "(unknown model)"

    def __init__(self, *settings):
        """The settings every model's gate is made with (AdmissionGate's arguments)."""
        self.settings = settings
        self.deadline_seconds = settings[2]
        self._gates: dict[str, AdmissionGate] = {}
        self._lock = threading.Lock()

    def gate(self, model: str) -> AdmissionGate:
        """The gate of a model (``model`` must be a served name or UNKNOWN: the table never grows with strangers' names)."""
        try:
            return self._gates[model]
        except KeyError:
            with self._lock:
                return self._gates.setdefault(model, AdmissionGate(*self.settings))

    @property
    def overloaded(self) -> bool:
        """True while any model's gate sheds or has a full queue."""
        return any(gate.overloaded for gate in list(self._gates.values()))


def admitted(model_of):
    """Decorator for inference views: read the request's body, then run the view inside a slot of its model's gate.

    ``model_of(view_kwargs)`` names the model the request is for (from the URL, the body, or the endpoint).
    """

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            request.get_data()  # the whole (bounded) body first: a slow client never holds a slot
            gates: AdmissionGates = current_app.extensions["admission_gate"]
            name = model_of(kwargs)
            served = current_app.extensions["model_registry"].serves(name)
            gate = gates.gate(name if served else AdmissionGates.UNKNOWN)
            started, seconds = getattr(g, "started", time.perf_counter()), request_deadline(gates.deadline_seconds)
            with gate.admit(started, seconds):
                # The view hands this to its model's runner: a batching model waits for more requests only
                # until the deadline, and only while others are on their way (app/models/batching.py).
                with gate.arrivals.arriving(started + seconds) as admission:
                    return view(*args, admission=admission, **kwargs)

        wrapper.admitted = True  # the OpenAPI description documents its 503 and X-Request-Timeout
        return wrapper

    return decorate


def init_app(app) -> None:
    """One set of gates per app, which under gunicorn means per worker process: one gate per model."""
    settings = app.settings
    app.extensions["admission_gate"] = AdmissionGates(settings.max_inflight, settings.max_queued,
                                                      settings.request_deadline_seconds, settings.shed_delay_seconds)
