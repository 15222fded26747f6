"""``dualwatch serve``: the real VisualDL and TensorBoard servers on one logdir, started and stopped together.

Why a command and not two lines in a README: in a container each server must listen on
``0.0.0.0`` (its default of localhost is unreachable through a published port), both must
stop when the container stops (``docker stop`` sends SIGTERM to PID 1), and a port already
taken must say so: VisualDL 2.5 does not exit when it cannot bind (a thread of its own keeps
waiting for the server), so it would hang without a word.

Each server runs from this Python's environment (``python -m visualdl.server.app``,
``python -m tensorboard.main``) in a session of its own, so a Ctrl-C in the terminal reaches
only this command, which stops both process groups (SIGTERM, then SIGKILL after
:data:`STOP_GRACE` seconds: TensorBoard's data server goes with its parent); on Linux each
server also gets SIGTERM should this command die without a chance to stop them (SIGKILL). Their
output goes to a temporary file whose last lines are shown when a server fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Iterator

import click

from dualwatch._errors import DualwatchError

#: seconds a server has to answer HTTP after its start (TensorBoard takes a few on a busy machine)
START_TIMEOUT = 60.0
#: seconds a server has to exit after SIGTERM before it is killed
STOP_GRACE = 5.0
#: prctl's option that signals a process when its parent dies (linux/prctl.h)
PR_SET_PDEATHSIG = 1
#: files whose presence says "inside a container" (Docker's, Podman's)
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")


@dataclass(frozen=True)
class Viewer:
    """One viewer: its name, the module that runs its server, the pip extra, and an HTTP path that
    answers once it serves."""

    name: str
    package: str
    module: str
    extra: str
    ready_path: str


VIEWERS = (
    Viewer("VisualDL", "visualdl", "visualdl.server.app", "visualdl", "/alive"),
    Viewer("TensorBoard", "tensorboard", "tensorboard.main", "tensorboard", "/data/runs"),
)


def default_host(root: str = "/") -> str:
    """``0.0.0.0`` inside a container (Docker's ``/.dockerenv``, Podman's ``/run/.containerenv``,
    the ``container`` variable of systemd-nspawn and Podman, a Kubernetes pod), where only a server
    on every interface can be reached through a published port; else ``127.0.0.1``, which shows
    the runs to this machine alone."""
    markers = (os.path.join(root, marker.lstrip("/")) for marker in CONTAINER_MARKERS)
    variables = ("container", "KUBERNETES_SERVICE_HOST")  # systemd-nspawn and Podman: lower case
    if any(os.path.exists(m) for m in markers) or any(os.environ.get(v) for v in variables):
        return "0.0.0.0"
    return "127.0.0.1"


class _Server:
    """A started viewer server: its process (the leader of its own session) and its output file."""

    def __init__(self, viewer: Viewer, logdir: str, host: str, port: int, output_dir: str) -> None:
        self.viewer, self.port = viewer, port
        self.url = f"http://{_url_host(host)}:{port}/"
        # the address to ask: a server on every interface answers on loopback
        self._probe = f"http://{_url_host(_loopback(host))}:{port}{viewer.ready_path}"
        self.log = os.path.join(output_dir, f"{viewer.package}.log")
        argv = [sys.executable, "-m", viewer.module, "--logdir", logdir, "--host", host, "--port", str(port)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self._probe, timeout=2) as response:
                return response.status < 300
        except OSError:
            return False

    def failure(self, what: str) -> DualwatchError:
        """An error that says which server on which port, what happened and its last output lines."""
        return DualwatchError(
            f"{self.viewer.name} on port {self.port} {what}; its last output:\n{_tail(self.log)}"
        )

    def signal(self, signum: int) -> None:
        """``signum`` to the server's process group (TensorBoard's data server included)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)


def serve(logdir: str, host: str, ports: dict[str, int]) -> None:
    """Serves ``logdir`` with every installed viewer in ``ports`` (package name -> port) until
    SIGINT or SIGTERM; raises :class:`DualwatchError` (exit status 2) when a viewer cannot be
    served, after stopping the others."""
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise DualwatchError(f"not a directory: {logdir}")
    viewers = [v for v in VIEWERS if v.package in ports]
    installed = [v for v in viewers if importlib.util.find_spec(v.package) is not None]
    if not installed:
        raise DualwatchError(
            "neither VisualDL nor TensorBoard is installed: pip install 'dualwatch[visualdl,tensorboard]'"
        )
    for viewer in viewers:
        if viewer not in installed:
            click.echo(
                f"dualwatch serve: warning: {viewer.name} is not installed, serving the other viewer "
                f"alone; to serve it too: pip install 'dualwatch[{viewer.extra}]'",
                err=True,
            )
    for viewer in installed:
        _check_port(viewer, host, ports[viewer.package])
    try:
        os.makedirs(logdir, exist_ok=True)  # served before training starts: the viewers wait for runs
    except OSError as err:
        raise DualwatchError(f"cannot create the log directory {logdir}: {err.strerror}") from None
    with _stop_on_signal(), tempfile.TemporaryDirectory(prefix="dualwatch-serve-") as output_dir:
        servers: list[_Server] = []
        try:
            for viewer in installed:
                servers.append(_Server(viewer, logdir, host, ports[viewer.package], output_dir))
            _wait_until_served(servers)
            for server in servers:
                click.echo(f"{server.viewer.name:<12} {server.url}")
            if host in ("0.0.0.0", "::"):
                click.echo("(listening on every interface: from the host, open the published ports)")
            click.echo(f"Press Ctrl-C to stop {'both' if len(servers) > 1 else 'it'}.")
            while True:
                for server in servers:
                    if server.proc.poll() is not None:
                        raise server.failure(f"exited with status {server.proc.returncode}")
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            _stop_all(servers)


def _stop_all(servers: list[_Server]) -> None:
    """SIGTERM to every server at once, SIGKILL to what is left after :data:`STOP_GRACE` seconds; a
    second Ctrl-C or SIGTERM meanwhile is ignored, so none is left running."""
    before = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        for server in servers:
            if server.proc.poll() is None:
                server.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for server in servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(max(0.0, deadline - time.monotonic()))
            server.signal(signal.SIGKILL)  # what is left of its group after the grace
            server.proc.wait()
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _check_port(viewer: Viewer, host: str, port: int) -> None:
    """A port already taken is an error before anything starts (VisualDL itself would hang)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host, port))
        except OSError as err:
            option = f"--{viewer.package}-port"
            raise DualwatchError(
                f"cannot serve {viewer.name} on {host}:{port}: {err.strerror}. Stop what listens "
                f"there (another viewer?) or pick a free port with {option} N"
            ) from None


def _wait_until_served(servers: list[_Server]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    waiting = list(servers)
    while waiting:
        for server in list(waiting):
            if server.proc.poll() is not None:
                raise server.failure(f"exited with status {server.proc.returncode} before serving")
            if server.answers():
                waiting.remove(server)
        if waiting and time.monotonic() > deadline:
            raise waiting[0].failure(f"did not answer HTTP within {START_TIMEOUT:.0f} s")
        time.sleep(0.2 if waiting else 0)


@contextlib.contextmanager
def _stop_on_signal() -> Iterator[None]:
    """SIGTERM (``docker stop``, ``kill``) stops the servers as Ctrl-C does; SIGINT too when this
    process inherited it ignored (started in the background by a shell script)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    before = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _die_with_parent() -> None:
    """In a server's process, before it runs: SIGTERM when this command dies, even by SIGKILL,
    which no handler sees, so that no server outlives it (Linux's ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _loopback(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read()[-8192:].decode("utf-8", "replace")
    except OSError as err:
        return f"<{err}>"
    return "\n".join("  " + line for line in text.splitlines()[-lines:]) or "  (none)"
