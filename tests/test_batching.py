"""Adaptive batching (app/models/batching.py): merging, parting, isolation of failures, waits and settings."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.config import SettingsError
from app.models.batching import Batcher, BatchingSettings, concat_batches, split_outputs


class Recorder:
    """A predict() that doubles its input, records every batch it saw, and can hold the first call."""

    def __init__(self, hold_first: bool = False):
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, batch: dict) -> dict:
        self.calls.append(list(batch["x"]))
        self.entered.set()
        self.release.wait(5)
        if any(v < 0 for v in batch["x"]):
            raise ValueError("negative input")
        return {"y": np.asarray(batch["x"]) * 2}


def run_together(batcher: Batcher, recorder: Recorder, batches: list[list[int]]) -> list:
    """Hold the first prediction until every other request is queued, then let all run."""
    with ThreadPoolExecutor(len(batches)) as pool:
        first = pool.submit(run_one, batcher, batches[0])
        assert recorder.entered.wait(5)
        rest = [pool.submit(run_one, batcher, b) for b in batches[1:]]
        while len(batcher._queue) < len(batches) - 1:
            time.sleep(0.001)
        recorder.release.set()
        return [f.result() for f in (first, *rest)]


def spy_on_waits(batcher: Batcher) -> list[float]:
    """Record the timeout of every wait the batcher's leader makes for more requests."""
    waits: list[float] = []
    wait = batcher._cond.wait

    def recording(timeout=None):
        waits.append(timeout)
        return wait(timeout)

    batcher._cond.wait = recording
    return waits


def admitted_together(arrivals, batcher: Batcher, later: float) -> tuple:
    """Two requests let in at once; the first reaches the model at once, the second `later` seconds after."""
    both_admitted = threading.Barrier(2)

    def request(delay: float, items: list[int]):
        with arrivals.arriving() as admission:
            both_admitted.wait()
            time.sleep(delay)
            return run_one(batcher, items, admission)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.submit(request, 0, [1]), pool.submit(request, later, [2])
        return first.result(), second.result()


def run_one(batcher: Batcher, items: list[int], admission=None):
    """One request's result, or the exception it got (``admission``: what the gate let it in with)."""
    try:
        return list(batcher.run({"x": items}, len(items), admission)["y"])
    except ValueError as exc:
        return exc


def test_requests_queued_during_a_prediction_run_as_one_batch_and_each_gets_its_own_part():
    recorder = Recorder(hold_first=True)
    batcher = Batcher(recorder, BatchingSettings(max_batch_size=16))
    results = run_together(batcher, recorder, [[1], [2, 3], [4], [5]])
    assert results == [[2], [4, 6], [8], [10]]
    assert recorder.calls == [[1], [2, 3, 4, 5]]  # the first alone (nothing was waiting), then the rest merged


def test_a_merged_batch_never_exceeds_the_maximum_and_keeps_arrival_order():
    recorder = Recorder(hold_first=True)
    batcher = Batcher(recorder, BatchingSettings(max_batch_size=3))
    results = run_together(batcher, recorder, [[0], [1], [2, 3], [4], [5, 6, 7, 8]])
    assert results == [[0], [2], [4, 6], [8], [10, 12, 14, 16]]
    assert recorder.calls == [[0], [1, 2, 3], [4], [5, 6, 7, 8]]  # an oversized request runs alone
    assert all(len(c) <= 3 for c in recorder.calls[:-1])


def test_without_batching_predictions_run_one_at_a_time_unmerged():
    recorder = Recorder(hold_first=True)
    active, most = [0], [0]
    lock = threading.Lock()

    def counting(batch):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            return recorder(batch)
        finally:
            with lock:
                active[0] -= 1

    results = run_together(Batcher(counting), recorder, [[1], [2], [3], [4]])
    assert results == [[2], [4], [6], [8]]
    assert recorder.calls == [[1], [2], [3], [4]]
    assert most[0] == 1


def test_one_bad_request_in_a_merged_batch_fails_alone():
    recorder = Recorder(hold_first=True)
    batcher = Batcher(recorder, BatchingSettings(max_batch_size=8))
    results = run_together(batcher, recorder, [[1], [2], [-1], [3]])
    assert results[0] == [2] and results[1] == [4] and results[3] == [6]
    assert isinstance(results[2], ValueError)
    assert recorder.calls[1] == [2, -1, 3]  # tried merged once, then one by one
    assert recorder.calls[2:] == [[2], [-1], [3]]


def test_a_request_alone_does_not_wait_and_with_max_wait_others_can_join():
    from app.models.batching import Arrivals

    recorder = Recorder()
    alone = Batcher(recorder, BatchingSettings(max_batch_size=8, max_wait_ms=0))
    assert run_one(alone, [1]) == [2]
    waiting = Batcher(recorder, BatchingSettings(max_batch_size=2, max_wait_ms=100))
    arrivals = Arrivals()
    with arrivals.arriving() as admission:  # alone in the worker: nobody else on the way, so no wait
        waits = spy_on_waits(waiting)
        assert run_one(waiting, [1], admission) == [2]
        assert waits == []

    assert admitted_together(arrivals, waiting, 0.02) == ([2], [4])
    assert recorder.calls[-1] == [1, 2]  # the second joined the first's wait; the batch was full, so no more wait


def test_outside_the_admission_gate_a_prediction_never_waits():
    """Jobs and batch scoring call models without the gate: nothing says more requests are coming."""
    recorder = Recorder()
    batcher = Batcher(recorder, BatchingSettings(max_batch_size=8, max_wait_ms=100))
    waits = spy_on_waits(batcher)
    assert run_one(batcher, [1]) == [2]
    assert waits == []


def test_the_wait_for_more_requests_ends_at_the_request_deadline():
    from app.models.batching import Arrivals

    recorder = Recorder()
    batcher = Batcher(recorder, BatchingSettings(max_batch_size=8, max_wait_ms=100))
    arrivals = Arrivals()
    with arrivals.arriving():  # another request on its way the whole time, which never reaches the model
        def timed(deadline):
            def run():
                with arrivals.arriving(deadline) as admission:
                    began = time.perf_counter()
                    assert run_one(batcher, [1], admission) == [2]
                    return time.perf_counter() - began
            with ThreadPoolExecutor(1) as pool:
                return pool.submit(run).result()

        waits = spy_on_waits(batcher)
        timed(time.perf_counter() + 0.01)
        assert waits and max(waits) <= 0.01  # up to the 10 ms deadline, not the 100 ms max wait
        waits.clear()
        assert timed(None) >= 0.09  # without a deadline it waits max_wait_ms for the one on its way
        assert max(waits) > 0.09


def test_merging_and_parting_columns():
    merged = concat_batches([{"a": np.zeros((1, 2)), "t": ["x"]}, {"a": np.ones((2, 2)), "t": ["y", "z"]}])
    assert merged["a"].shape == (3, 2) and merged["t"] == ["x", "y", "z"]
    parts = split_outputs({"label": np.array(["p", "q", "r"], dtype=object), "p": np.arange(3)}, [1, 2])
    assert [list(p["label"]) for p in parts] == [["p"], ["q", "r"]]
    assert [list(p["p"]) for p in parts] == [[0], [1, 2]]
    with pytest.raises(TypeError):
        concat_batches([object(), object()])


@pytest.mark.parametrize("settings", [{"max_batch_size": 0}, {"max_batch_size": "8"}, {"max_wait_ms": -1},
                                      {"max_wait_ms": 1000}, {"max_batch": 8}, {"max_batch_size": True}])
def test_bad_batching_settings_are_refused_with_the_reason(settings):
    with pytest.raises(ValueError, match="max_batch_size|max_wait_ms"):
        BatchingSettings.from_dict(settings)


def test_the_server_setting_is_checked_at_start(monkeypatch):
    from app import create_app

    with pytest.raises(SettingsError, match="BATCHING"):
        create_app({"TESTING": True, "BATCHING": {"review_sentiment": {"max_batch_size": 0}}})
    with pytest.raises(SettingsError, match="BATCHING"):
        create_app({"TESTING": True, "BATCHING": ["review_sentiment"]})


def test_a_manifest_with_bad_batching_is_refused_and_the_setting_overrides_the_manifest(tmp_path):
    from app.models.base import Manifest, ManifestError, Model

    manifest = Manifest.from_dict(tmp_path / "manifest.json", {
        "name": "m", "version": "1", "runtime": "python", "artifacts": {}, "batching": {"max_batch_size": 4}})
    assert Model(manifest).batching == BatchingSettings(4, 0.0)
    overridden = Model(manifest, {"batching": {"m": {"max_batch_size": 1}}})
    assert overridden.batching.max_batch_size == 1
    bad = Manifest.from_dict(tmp_path / "manifest.json", {
        "name": "m", "version": "1", "runtime": "python", "artifacts": {}, "batching": {"max_batch_size": -2}})
    with pytest.raises(ManifestError, match="max_batch_size"):
        Model(bad)


def test_concurrent_reviews_through_the_batching_model_get_the_answers_of_single_requests(app):
    """The served review model with batching: answers under concurrency equal those of one request at a time."""
    from app.api import registry

    reviews = [f"review {i}: " + ("a wonderful, moving film" if i % 2 else "a dull and lifeless mess") * (1 + i % 3)
               for i in range(48)]
    with app.app_context():
        runner = registry().runner("review_sentiment")
        alone = [runner.serve({"review": [r]}).rows[0] for r in reviews]
        calls = []
        predict, settings = runner.batcher.predict, runner.batcher.settings
        runner.batcher.predict = lambda batch: calls.append(len(batch["review"])) or predict(batch)
        runner.batcher.settings = BatchingSettings(max_batch_size=16)
        try:
            with ThreadPoolExecutor(12) as pool:
                together = list(pool.map(lambda r: runner.serve({"review": [r]}).rows[0], reviews))
        finally:
            runner.batcher.predict, runner.batcher.settings = predict, settings
    assert together == alone
    assert sum(calls) == len(reviews)


def test_the_wait_for_more_requests_happens_only_while_requests_are_on_their_way():
    from app.models.batching import Arrivals

    recorder = Recorder()
    batcher = Batcher(recorder, BatchingSettings(max_batch_size=8, max_wait_ms=100))
    arrivals = Arrivals()
    waits = spy_on_waits(batcher)
    with arrivals.arriving() as admission:  # alone in the worker: it reaches the model and nobody else is on the way
        assert run_one(batcher, [1], admission) == [2]
    assert waits == [] and arrivals.count == 0

    # the second is admitted at once but reaches the model 30 ms later
    assert admitted_together(arrivals, batcher, 0.03) == ([2], [4])
    assert recorder.calls[-1] == [1, 2]  # the first waited for it, and no longer than it took
    assert arrivals.count == 0
