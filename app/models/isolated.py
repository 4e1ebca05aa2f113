"""User code (the `python` runtime) in a process of its own, so that it can only take itself down.

A user's Model class may exit, crash (a segfault in a C extension), hang or leak. The serving
worker never imports it: each worker starts one child process per user model version (a
fresh interpreter, `spawn`), which verifies the files, imports the class, loads and warms it
up, and then answers decode / predict / postprocess / explain calls over a pipe. The worker
holds an IsolatedModel, a Model like any other for the registry, the batcher and every
protocol. As MLServer's inference pools and Triton's Python backend stubs do:

- a load that raises, exits or crashes refuses that version, with the exit code or signal;
- a call that crashes the process fails that request with 503, and the process is started
  again for the next one;
- a call that takes longer than PYTHON_MODEL_TIMEOUT_SECONDS fails with 503, and the process
  is killed and started again;
- an error the model raises on purpose (an APIError: 400, 413, 422...) keeps its status.

The built-in runtimes (scikit-learn, ONNX) stay in the worker: they run no user code.
"""
from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from pathlib import Path

from app.errors import APIError, ModelNotReady
from app.models.base import Manifest, Model, rejected_input

log = logging.getLogger(__name__)

# A first load imports numpy and the user's libraries in a fresh interpreter, then warms up.
LOAD_TIMEOUT_SECONDS = 300


class ModelProcessFailed(ModelNotReady):
    """The model's process crashed or ran past its time; it is started again for the next request (503)."""

    def __init__(self, message: str):
        """A 503 with Retry-After: the next request gets a fresh process."""
        super().__init__(message, retry_after=1)


class ModelLoadFailed(RuntimeError):
    """The user's model could not be loaded in its process (it raised, exited or crashed): the version is refused."""


class UserModelError(RuntimeError):
    """The user's code raised an error that is not an APIError (a bug of the model, logged in the model's process)."""


def how_it_ended(exitcode: int | None) -> str:
    """'exit code 3', 'signal SIGSEGV' or 'no exit code' for a process that ended."""
    if exitcode is None:
        return "no exit code"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def serve_model(conn, manifest_path: str, options: dict) -> None:
    """The model process: load the user's model, then answer calls until the pipe closes."""
    from app.models.python import load_python_model

    try:
        model = load_python_model(Manifest.read(Path(manifest_path)), options)
        model.load()
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt refuse the model too
        conn.send(("refused", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", None))
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):  # the worker is gone
            return
        try:
            reply = ("ok", getattr(model, method)(*args))
            conn.send(reply)
        except APIError as exc:
            conn.send(("api", exc.status, exc.message, exc.extra))
        except model.input_errors as exc:  # the client's values, not a bug: a 422 in the worker
            conn.send(("input", f"{type(exc).__name__}: {exc}"))
        except BaseException as exc:  # noqa: BLE001 - reported to the worker; SystemExit ends the loop below
            logging.getLogger(__name__).exception("model %s v%s: %s failed", model.name, model.version, method)
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            if isinstance(exc, SystemExit):
                return


class IsolatedModel(Model):
    """A user's Model class run in a child process; every call goes over a pipe."""

    def __init__(self, manifest: Manifest, options: dict | None = None):
        """Settings only: the process starts in load()."""
        super().__init__(manifest, options)
        self.timeout = float(self.options.get("python_model_timeout", 30))
        self._lock = threading.Lock()
        self._process = None
        self._conn = None

    # --- the process ---------------------------------------------------------------------------

    def load(self) -> None:
        """Start the model's process and wait until it has loaded and warmed up the model."""
        with self._lock:
            self._start()
        self.ready = True

    def _start(self) -> None:
        """A fresh process with the model loaded, or ManifestError saying why it could not load."""
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        child_options = {k: v for k, v in self.options.items() if k != "python_model_timeout"}
        process = context.Process(target=serve_model, args=(theirs, str(self.manifest.path), child_options),
                                  name=f"model-{self.name}-v{self.version}", daemon=True)
        process.start()
        theirs.close()
        try:
            reply = self._receive(ours, process, LOAD_TIMEOUT_SECONDS, "loading")
        except ModelProcessFailed as exc:
            raise ModelLoadFailed(str(exc)) from None
        if reply[0] != "ok":
            process.join(5)
            raise ModelLoadFailed(f"in the model's process: {reply[1]}")
        self._process, self._conn = process, ours

    def _receive(self, conn, process, timeout: float, doing: str):
        """The process's answer; ModelProcessFailed when it ended or did not answer within ``timeout``."""
        try:
            if conn.poll(timeout):
                return conn.recv()
        except (EOFError, OSError):
            pass
        else:
            process.kill()
            process.join(5)
            conn.close()
            raise ModelProcessFailed(f"model {self.name!r} v{self.version} took longer than {timeout:g} s {doing}; "
                                     "its process was stopped and starts again for the next request")
        process.join(5)
        conn.close()
        raise ModelProcessFailed(f"model {self.name!r} v{self.version}: its process ended while {doing} "
                                 f"({how_it_ended(process.exitcode)}); it starts again for the next request")

    def _call(self, method: str, *args):
        """One call in the model's process (started again first if an earlier call ended it)."""
        with self._lock:
            if self._process is None:
                self._start()
            process, conn = self._process, self._conn
            try:
                conn.send((method, args))
                reply = self._receive(conn, process, self.timeout, f"running {method}")
            except ModelProcessFailed:
                self._process = self._conn = None
                log.error("model %s v%s: its process failed during %s", self.name, self.version, method)
                raise
            except (BrokenPipeError, OSError):
                self._process = self._conn = None
                raise ModelProcessFailed(f"model {self.name!r} v{self.version}: its process is gone; "
                                         "it starts again for the next request") from None
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "api":
            _, status, message, extra = reply
            raise APIError(message, status, **extra)
        if reply[0] == "input":
            raise rejected_input(self.name, self.version, reply[1])
        raise UserModelError(f"model {self.name!r} v{self.version} failed: {reply[1]}")

    def close(self) -> None:
        """Stop the model's process (a version no longer served; the end of a smoke test)."""
        with self._lock:
            if self._process is not None:
                self._conn.close()
                self._process.join(2)
                if self._process.is_alive():
                    self._process.kill()
                self._process = self._conn = None

    # --- the model interface, each step in the model's process ------------------------------------

    def decode(self, inputs):
        """The user's decode, in its process."""
        return self._call("decode", inputs)

    def predict(self, batch):
        """The user's predict, in its process."""
        return self._call("predict", batch)

    def postprocess(self, outputs):
        """The user's postprocess, in its process."""
        return self._call("postprocess", outputs)

    def explain(self, batch, outputs):
        """The user's explain, in its process."""
        return self._call("explain", batch, outputs)


def load_isolated_model(manifest: Manifest, options: dict | None = None) -> Model:
    """The `python` runtime: the user's class in its own process (app/models/python.py runs it there)."""
    return IsolatedModel(manifest, options)
