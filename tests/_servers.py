"""The real ``visualdl`` and ``tensorboard`` servers, started on 127.0.0.1 and read over HTTP.

Shared by the end-to-end tests of the writer and of ``dualwatch convert``. API endpoints used
(read from the installed servers):

* VisualDL 2.5 (``visualdl/server/app.py``, ``api.py``, ``lib.py``): ``/alive`` (204 when up),
  ``/app/api/runs``, ``/app/api/scalar/tags`` -> ``{"runs": [...], "tags": [[...]]}`` and
  ``/app/api/scalar/list?run=<run>&tag=<tag>`` -> ``[[wall_ms, step, value], ...]``, each wrapped in
  ``{"status": 0, "msg": "", "data": ...}``. A run is named by its directory path; tags keep their
  ``/`` in the API. Answers are cached for ``--cache-timeout`` seconds.
* TensorBoard 2.x: ``/data/runs``, ``/data/plugin/scalars/tags`` -> ``{run: {tag: {...}}}`` and
  ``/data/plugin/scalars/scalars?run=<run>&tag=<tag>`` -> ``[[wall_time_s, step, value], ...]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Any, Callable, Iterator

import numpy as np

BIN = os.path.dirname(sys.executable)


def f32(x: float) -> float:
    """What both viewers store for a scalar: the nearest float32."""
    return float(np.float32(x))


def ms(wall: float) -> int:
    return int(wall * 1000 + 0.5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stops ``proc`` and everything in its process group (it was started in a new session)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # also whatever it started (TensorBoard's data server)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)


def _tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")
    except OSError as err:
        return f"<{err}>"


def _get(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def _url(base: str, path: str, **query: str) -> str:
    return f"{base}{path}?{urllib.parse.urlencode(query)}" if query else f"{base}{path}"


class Server:
    def __init__(self, name: str, argv: list[str], log: str, base: str) -> None:
        self.name, self.log, self.base = name, log, base
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self) -> str:
        return f"--- {self.name} output ({self.log}) ---\n{_tail(self.log)}"

    def wait_up(self, path: str, deadline: float) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited with {self.proc.returncode}\n{self.tail()}"
            try:
                with urllib.request.urlopen(self.base + path, timeout=2) as response:
                    if response.status < 300:
                        return
            except OSError as err:
                last = err
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not answer {path} in time ({last!r})\n{self.tail()}")

    def vdl(self, path: str, **query: str) -> Any:
        """A VisualDL API answer's ``data``; a failed call (``status`` != 0) raises."""
        answer = _get(_url(self.base, "/app/api/" + path, **query))
        assert answer["status"] == 0, f"VisualDL {path} {query}: {answer}"
        return answer["data"]

    def tb(self, path: str, **query: str) -> Any:
        return _get(_url(self.base, path, **query))


@contextlib.contextmanager
def both_servers(
    logdir: str, root: str, vdl_cache: float, tb_reload: float
) -> Iterator[tuple[Server, Server]]:
    """``(visualdl, tensorboard)`` serving ``logdir``, their output logged in ``root``; always stopped."""
    started: list[Server] = []
    try:
        vdl_port, tb_port = _free_port(), _free_port()
        vdl = Server(
            "visualdl",
            [os.path.join(BIN, "visualdl"), "--logdir", logdir, "--host", "127.0.0.1",
             "--port", str(vdl_port), "--cache-timeout", str(vdl_cache)],
            os.path.join(root, "visualdl.log"),
            f"http://127.0.0.1:{vdl_port}",
        )  # fmt: skip
        started.append(vdl)
        tb = Server(
            "tensorboard",
            [os.path.join(BIN, "tensorboard"), "--logdir", logdir, "--host", "127.0.0.1",
             "--port", str(tb_port), "--reload_interval", str(tb_reload)],
            os.path.join(root, "tensorboard.log"),
            f"http://127.0.0.1:{tb_port}",
        )  # fmt: skip
        started.append(tb)
        deadline = time.monotonic() + 60
        vdl.wait_up("/alive", deadline)
        tb.wait_up("/data/runs", deadline)
        yield vdl, tb
    finally:
        for server in started:
            _stop(server.proc)


def _eventually(check: Callable[[], Any], timeout: float, what: str, *servers: Server) -> Any:
    """Calls ``check`` until it returns without raising; its last failure is the test's failure."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, OSError, ValueError, LookupError) as err:
            if time.monotonic() > deadline:
                logs = "\n".join(s.tail() for s in servers)
                raise AssertionError(f"{what}: not within {timeout} s: {err!r}\n{logs}") from err
        time.sleep(0.25)


def _vdl_run(vdl: Server, logdir: str, run: str) -> str:
    """VisualDL names a run by its directory path (``<logdir>/<run>``)."""
    runs = vdl.vdl("runs")
    match = [r for r in runs if os.path.normpath(r) == os.path.normpath(os.path.join(logdir, run))]
    assert match, f"VisualDL runs {runs} lack {run!r}"
    return match[0]


def visualdl_scalars(vdl: Server, logdir: str, run: str) -> dict[str, list[list[float]]]:
    """``{tag: [[wall_ms, step, value]]}`` as VisualDL's server serves ``run``."""
    name = _vdl_run(vdl, logdir, run)
    tags = vdl.vdl("scalar/tags")
    return {tag: vdl.vdl("scalar/list", run=name, tag=tag) for tag in tags["tags"][tags["runs"].index(name)]}


def tensorboard_scalars(tb: Server, run: str) -> dict[str, list[list[float]]]:
    """``{tag: [[wall_s, step, value]]}`` as TensorBoard's server serves ``run``."""
    return {
        tag: tb.tb("/data/plugin/scalars/scalars", run=run, tag=tag)
        for tag in tb.tb("/data/plugin/scalars/tags")[run]
    }


def as_visualdl(points: dict[str, list[tuple[int, float, float]]]) -> dict[str, list[list[float]]]:
    """``{tag: [(step, wall_time, value)]}`` written by dualwatch, as VisualDL's server must serve it."""
    return {tag: [[ms(wall), step, f32(v)] for step, wall, v in series] for tag, series in points.items()}


def as_tensorboard(points: dict[str, list[tuple[int, float, float]]]) -> dict[str, list[list[float]]]:
    """``{tag: [(step, wall_time, value)]}`` written by dualwatch, as TensorBoard's server must serve it."""
    return {
        tag: [[ms(wall) / 1000, step, f32(v)] for step, wall, v in series] for tag, series in points.items()
    }
