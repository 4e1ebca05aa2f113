"""Adaptive batching: the predictions of requests that arrive together in a worker run as one predict(batch).

Every model has one ``Batcher``; it lets one prediction of the model run at a
time in the worker (inference is CPU-bound, and a user's model class need not
be thread-safe). While it runs, the requests that arrive queue up, and the next
prediction takes all of them at once, up to ``max_batch_size`` items: under
load, batches form by themselves; alone, a request runs at once and waits for
nothing. ``max_wait_ms`` (default 0) lets a prediction wait that long for more
requests before it starts, but only while the worker holds requests that have
not reached the model yet, and never past the earliest deadline of the
requests it holds (both known from the admission gate; a prediction that does
not come through the gate, such as a job's or a batch scoring run's, never waits). The gate hands
what it knows of a request to the view as an ``Admission``, which the view passes on to the model's
runner (app/models/runner.py) and so to ``Batcher.run``: nothing travels unseen beside the call.

With ``max_batch_size`` 1 (the default for a model whose manifest says nothing)
requests are not merged, only run one after another. A merged batch that fails
is run again request by request, so one bad request cannot fail the others.

A model turns batching on in its manifest, ``"batching": {"max_batch_size": 16,
"max_wait_ms": 0}``, and the server's BATCHING setting overrides it per model.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

MAX_WAIT_MS_LIMIT = 100.0


class Arrivals:
    """Requests let into a worker that have not reached a model yet (the admission gate keeps one per worker).

    A prediction with max_wait_ms waits for more requests only while this count is above zero:
    when every request in the worker has reached its model, nobody else is coming.
    """

    def __init__(self):
        """No request on its way."""
        self._lock = threading.Lock()
        self.count = 0

    @contextlib.contextmanager
    def arriving(self, deadline: float | None = None):
        """An Admission for a request let in, counted as on its way until it reaches a model (or ends)."""
        with self._lock:
            self.count += 1
        admission = Admission(deadline, self)
        try:
            yield admission
        finally:
            admission.reached()


@dataclass(eq=False)
class Admission:
    """What the admission gate knows of one request that its model's batcher needs: the request's deadline
    (time.perf_counter() seconds) and the worker's Arrivals it counts in until it reaches the model."""

    deadline: float | None = None
    arrivals: Arrivals | None = None

    def reached(self) -> None:
        """The request reached its model: it no longer counts as on its way (once; called in its own thread)."""
        arrivals, self.arrivals = self.arrivals, None
        if arrivals is not None:
            with arrivals._lock:
                arrivals.count -= 1


@dataclass(frozen=True)
class BatchingSettings:
    """How one model's requests are merged."""

    max_batch_size: int = 1
    max_wait_ms: float = 0.0

    @classmethod
    def from_dict(cls, settings: Mapping | None) -> "BatchingSettings":
        """Parse {"max_batch_size": int >= 1, "max_wait_ms": 0..100}; ValueError says what is wrong."""
        settings = dict(settings or {})
        unknown = sorted(set(settings) - {"max_batch_size", "max_wait_ms"})
        if unknown:
            raise ValueError(f"batching settings take max_batch_size and max_wait_ms, not {unknown}")
        size, wait = settings.get("max_batch_size", 1), settings.get("max_wait_ms", 0.0)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batching max_batch_size must be a whole number >= 1, got {size!r}")
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WAIT_MS_LIMIT:
            raise ValueError(f"batching max_wait_ms must be a number of milliseconds from 0 to "
                             f"{MAX_WAIT_MS_LIMIT:g}, got {wait!r}")
        return cls(size, float(wait))

    def to_dict(self) -> dict:
        """The manifest / description form."""
        return {"max_batch_size": self.max_batch_size, "max_wait_ms": self.max_wait_ms}


def concat_batches(batches: Sequence[Any]) -> Any:
    """One decoded batch from several: {input: column} with arrays stacked and lists joined."""
    first = batches[0]
    if isinstance(first, Mapping):
        return {name: concat_batches([b[name] for b in batches]) for name in first}
    if isinstance(first, np.ndarray):
        return np.concatenate(batches, axis=0)
    if isinstance(first, (list, tuple)):
        return [item for b in batches for item in b]
    raise TypeError(f"cannot merge batches of type {type(first).__name__}: override concat_batches")


def split_outputs(outputs: Any, sizes: Sequence[int]) -> list[Any]:
    """Each request's part of a merged prediction: every output column sliced at the request boundaries."""
    bounds = np.cumsum([0, *sizes])
    if isinstance(outputs, Mapping):
        return [{name: column[start:end] for name, column in outputs.items()}
                for start, end in zip(bounds[:-1], bounds[1:])]
    return [outputs[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


@dataclass(eq=False)
class _Waiting:
    """One request's batch in the queue, and what becomes of it."""

    batch: Any
    size: int
    deadline: float | None
    arrivals: Arrivals | None
    turn: threading.Event | None = None  # made only for a request that waits (a leader never does)
    lead: bool = False
    outputs: Any = None
    error: BaseException | None = None

    def finish(self, outputs: Any = None, error: BaseException | None = None) -> None:
        """Hand the request its result and wake its thread, if it waits."""
        self.outputs, self.error = outputs, error
        if self.turn is not None:
            self.turn.set()

    def result(self) -> Any:
        """The request's outputs, or its error raised in its own thread."""
        if self.error is not None:
            raise self.error
        return self.outputs


class Batcher:
    """One prediction at a time for a model, merging the requests that queue meanwhile."""

    def __init__(self, predict: Callable[[Any], Any], settings: BatchingSettings = BatchingSettings(),
                 concat: Callable[[Sequence[Any]], Any] = concat_batches,
                 split: Callable[[Any, Sequence[int]], list[Any]] = split_outputs):
        """`predict` takes one decoded batch and returns its outputs; `concat` and `split` merge and part them."""
        self.predict = predict
        self.settings = settings
        self.concat, self.split = concat, split
        self._cond = threading.Condition()
        self._queue: deque[_Waiting] = deque()
        self._busy = False  # a thread is leading (collecting or predicting); invariant: idle => queue empty

    def run(self, batch: Any, size: int, admission: Admission | None = None) -> Any:
        """The outputs of `batch` (of `size` items), predicted alone or merged with others queued with it;
        ``admission``: what the gate let the request in with (None for jobs and batch scoring: no waiting)."""
        admission = admission or Admission()
        me = _Waiting(batch, size, admission.deadline, admission.arrivals)
        admission.reached()
        with self._cond:
            self._queue.append(me)
            lead = not self._busy
            if not lead:
                me.turn = threading.Event()
                self._cond.notify_all()  # a leader waiting for a fuller batch counts again
            self._busy = True
        if not lead:
            me.turn.wait()
            if not me.lead:
                return me.result()
        self._lead()
        return me.result()

    def _lead(self) -> None:
        """Take the queue's head (this thread's request first), predict it, hand the queue to the next leader."""
        with self._cond:
            self._wait_for_more()
            taken = self._take()
        try:
            self._predict(taken)
        finally:
            with self._cond:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.turn.set()
                else:
                    self._busy = False

    def _wait_for_more(self) -> None:
        """With max_wait_ms, let more requests join before predicting: only while the worker holds requests
        not queued here yet, and never past a held request's deadline."""
        arrivals = self._queue[0].arrivals
        if self.settings.max_wait_ms <= 0 or self.settings.max_batch_size <= 1 or arrivals is None:
            return  # no waiting asked for, or not behind the admission gate (jobs, batch scoring)
        end = time.perf_counter() + self.settings.max_wait_ms / 1000
        while sum(w.size for w in self._queue) < self.settings.max_batch_size:
            if arrivals.count <= 0:
                return  # every request in the worker has reached its model: nobody else is coming
            deadlines = [w.deadline for w in self._queue if w.deadline is not None]
            left = min([end, *deadlines]) - time.perf_counter()
            if left <= 0:
                return
            self._cond.wait(left)

    def _take(self) -> list[_Waiting]:
        """Requests from the head of the queue, up to max_batch_size items (always at least one)."""
        taken = [self._queue.popleft()]
        items = taken[0].size
        while self._queue and items + self._queue[0].size <= self.settings.max_batch_size:
            items += self._queue[0].size
            taken.append(self._queue.popleft())
        return taken

    def _predict(self, taken: list[_Waiting]) -> None:
        """Predict the merged batch and give every request its part; on failure, each request alone."""
        if len(taken) > 1:
            try:
                parts = self.split(self.predict(self.concat([w.batch for w in taken])), [w.size for w in taken])
            except Exception:
                pass  # one request's bad input must not fail the others: run them one by one below
            else:
                for waiting, outputs in zip(taken, parts):
                    waiting.finish(outputs)
                return
        for waiting in taken:
            try:
                waiting.finish(self.predict(waiting.batch))
            except BaseException as exc:  # delivered to the request's own thread, which raises it
                waiting.finish(error=exc)
