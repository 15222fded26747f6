"""``dualwatch serve``: the real VisualDL and TensorBoard servers on a logdir written by ``Writer``.

Each test runs the command as a user does (a process of its own, stdout to a pipe) and reads the
servers over HTTP as ``_servers.py`` does; no server is left running (the child pids are checked).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from _servers import _free_port, _get

from dualwatch import Writer
from dualwatch._serve import default_host

#: the CLI as the console script runs it, with sys.modules[BLOCKED] = None first when BLOCKED is set
#: (how Python marks a package as not importable: the viewer counts as not installed)
CLI = (
    "import os, sys\n"
    "if os.environ.get('BLOCKED'): sys.modules[os.environ['BLOCKED']] = None\n"
    "from dualwatch._cli import main\n"
    "sys.argv[0] = 'dualwatch'\n"
    "main()"
)
REPO = str(Path(__file__).resolve().parents[1])


class Serve:
    """A running ``dualwatch serve``: its process, the lines it printed and its servers' pids."""

    def __init__(self, logdir: Path, *args: str, blocked: str = "") -> None:
        env = {**os.environ, "PYTHONPATH": REPO, "BLOCKED": blocked}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLI, "serve", str(logdir), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []

    @classmethod
    def on(cls, logdir: Path, ports: tuple[int, int], host: str = "127.0.0.1", blocked: str = "") -> Serve:
        """``dualwatch serve`` on ``host`` with both viewers' ports given."""
        vdl_port, tb_port = ports
        return cls(
            logdir,
            "--host",
            host,
            "--visualdl-port",
            str(vdl_port),
            "--tensorboard-port",
            str(tb_port),
            blocked=blocked,
        )

    def wait_served(self, timeout: float = 90) -> list[str]:
        """The lines printed up to "Press Ctrl-C"; fails with stderr when the command exits first."""
        deadline = time.monotonic() + timeout
        while not self.lines or not self.lines[-1].startswith("Press Ctrl-C"):
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"serve exited {self.proc.wait()}: {self.proc.stderr.read()}")
            self.lines.append(line.rstrip("\n"))
            assert time.monotonic() < deadline, self.lines
        return self.lines

    def servers(self) -> list[int]:
        """The pids of the server processes and of everything they started."""
        found, parents = [], [self.proc.pid]
        while parents:
            parent = parents.pop()
            try:
                with open(f"/proc/{parent}/task/{parent}/children") as f:
                    children = [int(pid) for pid in f.read().split()]
            except OSError:
                continue
            found += children
            parents += children
        return found

    def stop(self) -> None:
        """A failed test's cleanup: SIGTERM (the command stops its servers), SIGKILL after 20 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    with Writer(tmp_path / "runs", run="r", console=None) as writer:
        for step in range(5):
            writer.log(step, {"Loss/Train": 1.0 / (step + 1)})
    return tmp_path / "runs"


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    yield _free_port(), _free_port()


def _gone(pids: list[int], timeout: float = 10) -> list[int]:
    """Of ``pids``, those still alive after ``timeout`` (a zombie counts as gone: it runs nothing)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_both_viewers_serve_the_run_and_a_signal_stops_both_with_exit_0(
    logdir: Path, ports: tuple[int, int], signum: int
) -> None:
    vdl_port, tb_port = ports
    serve = Serve.on(logdir, ports)
    try:
        lines = serve.wait_served()
        assert lines[:2] == [
            f"VisualDL     http://127.0.0.1:{vdl_port}/",
            f"TensorBoard  http://127.0.0.1:{tb_port}/",
        ]
        runs = _get(f"http://127.0.0.1:{vdl_port}/app/api/runs")["data"]
        assert [os.path.normpath(r) for r in runs] == [os.path.normpath(logdir / "r")]
        assert _get(f"http://127.0.0.1:{tb_port}/data/runs") == ["r"]
        servers = serve.servers()
        assert len(servers) >= 2  # both servers (and TensorBoard's data server, when it runs one)
        serve.proc.send_signal(signum)
        assert serve.proc.wait(20) == 0, serve.proc.stderr.read()
        assert _gone(servers) == []
        for port in ports:
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        serve.stop()


def test_a_port_already_taken_is_an_error_naming_it_exit_2_and_nothing_left_running(
    logdir: Path, ports: tuple[int, int]
) -> None:
    vdl_port, tb_port = ports
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", tb_port))
        taken.listen()
        serve = Serve.on(logdir, ports)
        try:
            assert serve.proc.wait(60) == 2
            stderr = serve.proc.stderr.read()
        finally:
            serve.stop()
    assert stderr == (
        f"dualwatch serve: cannot serve TensorBoard on 127.0.0.1:{tb_port}: Address already in use. "
        "Stop what listens there (another viewer?) or pick a free port with --tensorboard-port N\n"
    )
    with pytest.raises(OSError):  # VisualDL was not started, or was stopped
        socket.create_connection(("127.0.0.1", vdl_port), timeout=2).close()


def test_a_viewer_that_dies_is_an_error_naming_its_port_exit_2_and_the_other_is_stopped(
    logdir: Path, ports: tuple[int, int]
) -> None:
    _, tb_port = ports
    serve = Serve.on(logdir, ports)
    try:
        serve.wait_served()
        servers = serve.servers()
        (tensorboard,) = [
            pid for pid in servers if b"tensorboard.main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        os.kill(tensorboard, signal.SIGKILL)
        assert serve.proc.wait(30) == 2
        assert serve.proc.stderr.read().startswith(
            f"dualwatch serve: TensorBoard on port {tb_port} exited with status -9; its last output:\n"
        )
        assert _gone(servers) == []
    finally:
        serve.stop()


def test_serve_killed_by_sigkill_takes_its_servers_with_it(logdir: Path, ports: tuple[int, int]) -> None:
    serve = Serve.on(logdir, ports)
    try:
        serve.wait_served()
        servers = serve.servers()
        serve.proc.kill()
        assert _gone(servers) == []
    finally:
        serve.stop()


def test_the_host_given_is_where_both_listen_and_what_the_urls_show(
    logdir: Path, ports: tuple[int, int]
) -> None:
    vdl_port, tb_port = ports
    serve = Serve.on(logdir, ports, host="0.0.0.0")
    try:
        lines = serve.wait_served()
        assert lines[:3] == [
            f"VisualDL     http://0.0.0.0:{vdl_port}/",
            f"TensorBoard  http://0.0.0.0:{tb_port}/",
            "(listening on every interface: from the host, open the published ports)",
        ]
        address = _outward_address()
        assert _get(f"http://{address}:{tb_port}/data/runs") == ["r"]  # not loopback only
        assert _get(f"http://{address}:{vdl_port}/app/api/runs")["status"] == 0
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(20) == 0
    finally:
        serve.stop()


def test_with_tensorboard_not_installed_it_serves_visualdl_and_names_the_extra(
    logdir: Path, ports: tuple[int, int]
) -> None:
    vdl_port, _ = ports
    serve = Serve.on(logdir, ports, blocked="tensorboard")
    try:
        assert serve.wait_served() == [
            f"VisualDL     http://127.0.0.1:{vdl_port}/",
            "Press Ctrl-C to stop it.",
        ]
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(20) == 0
        assert serve.proc.stderr.read() == (
            "dualwatch serve: warning: TensorBoard is not installed, serving the other viewer alone; "
            "to serve it too: pip install 'dualwatch[tensorboard]'\n"
        )
    finally:
        serve.stop()


def test_the_default_host_is_every_interface_in_a_container_else_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("container", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(variable, raising=False)
    assert default_host(str(tmp_path)) == "127.0.0.1"
    (tmp_path / ".dockerenv").touch()
    assert default_host(str(tmp_path)) == "0.0.0.0"
    (tmp_path / ".dockerenv").unlink()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".containerenv").touch()  # Podman's
    assert default_host(str(tmp_path)) == "0.0.0.0"
    (tmp_path / "run" / ".containerenv").unlink()
    monkeypatch.setenv("container", "podman")
    assert default_host(str(tmp_path)) == "0.0.0.0"


def test_the_same_port_for_both_viewers_is_a_usage_error(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dualwatch._cli import main

    result = CliRunner().invoke(
        main, ["serve", str(tmp_path), "--visualdl-port", "7000", "--tensorboard-port", "7000"]
    )
    assert result.exit_code == 2
    assert "--visualdl-port and --tensorboard-port are both 7000" in result.stderr


def _outward_address() -> str:
    """This machine's address on its default route (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never answered, only routed
            return s.getsockname()[0]
        except OSError:
            pytest.skip("no network interface besides loopback")
