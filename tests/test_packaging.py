"""The Dockerfile and CI install as the README tells users to (no Docker engine here to build it).

The README's two commands on a fresh machine are the source of truth: the Dockerfile must run
the first one's install and main job, CI the second one's install; the README's Docker steps
must point the viewers at where the image's demo writes.
"""

from __future__ import annotations

import re
from pathlib import Path

from dualwatch._cli import main

ROOT = Path(__file__).resolve().parent.parent


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(python3 -m venv .*?)\n```", _readme())


def _dockerfile() -> dict[str, list[str]]:
    """``{instruction: [arguments, ...]}`` of the Dockerfile, comments left out."""
    steps: dict[str, list[str]] = {}
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            steps.setdefault(instruction, []).append(args)
    return steps


def test_the_dockerfile_runs_the_readme_install_and_main_job() -> None:
    install, _, run = _readme_commands()[0].rpartition(" && ")
    docker = _dockerfile()
    assert install in docker["RUN"]
    assert docker["CMD"] == [str(run.split()).replace(chr(39), chr(34))]  # ["dualwatch", "demo"]


def test_the_image_is_slim_runs_as_a_user_and_exposes_both_viewers() -> None:
    docker = _dockerfile()
    assert docker["FROM"] == ["python:3.11-slim"]
    assert docker["USER"] and docker["USER"][-1] not in ("root", "0")
    assert docker["EXPOSE"] == ["8040 6006"]
    assert docker["WORKDIR"] == ["/app"]


def test_the_readme_docker_steps_view_what_the_image_writes() -> None:
    """The image's demo runs in /app with the default --logdir, so its runs are in /app/runs."""
    logdir = next(p.default for p in main.commands["demo"].params if p.name == "logdir")
    runs = f"{_dockerfile()['WORKDIR'][-1]}/{logdir}"
    readme = _readme()
    assert "docker build -t dualwatch ." in readme
    assert "-p 8040:8040 -p 6006:6006" in readme
    assert f"visualdl --logdir {runs} --host 0.0.0.0 --port 8040" in readme
    assert f"tensorboard --logdir {runs} --host 0.0.0.0 --port 6006" in readme
    assert "dualwatch monitor --interval 30" in readme


def test_ci_installs_what_the_readme_test_command_installs() -> None:
    tests = _readme_commands()[1]
    install = re.search(r"pip install (.*?) &&", tests).group(1)
    assert f"pip install -q {install}\n" in (ROOT / ".ci" / "run").read_text()
    assert tests.endswith("&& python -m pytest")


def test_ci_and_the_dockerfile_make_the_same_venv_with_the_same_pins() -> None:
    venv = "python3 -m venv .venv"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    (docker_install,) = (run for run in _dockerfile()["RUN"] if run.startswith(venv))
    assert venv in ci and ". .venv/bin/activate" in ci
    assert docker_install.startswith(f"{venv} && . .venv/bin/activate && pip install -c constraints.txt -e ")
    assert any(line.startswith("pip install -q -c constraints.txt -e ") for line in ci)
