"""The Dockerfile, compose.yaml and CI install as the README tells users to.

No Docker engine runs here (docker/check.sh builds and runs the image where one does), so these
read the files: the README's commands are the source of truth, the Dockerfile must install what
the README's main job installs with CI's pins, compose.yaml must run commands dualwatch accepts on
the runs the image writes, and the README's Docker commands must be the ones docker/check.sh runs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dualwatch._cli import main

ROOT = Path(__file__).resolve().parent.parent


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(python3 -m venv .*?)\n```", _readme())


def _stages() -> dict[str, list[tuple[str, str]]]:
    """``{stage: [(instruction, arguments), ...]}`` of the Dockerfile (``""``: the global ARGs),
    comments left out and continued lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, args = line.strip().partition(" ")
            if instruction == "FROM":
                current = args.split(" AS ")[-1]
                stages[current] = []
            stages[current].append((instruction, args))
    return stages


def _args(stage: str, instruction: str) -> list[str]:
    return [args for name, args in _stages()[stage] if name == instruction]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _requirements(tmp_path: Path, flavour: str, *options: str) -> tuple[list[str], list[str]]:
    """docker/requirements.py's (requirements, constraints) lines for ``flavour`` and extra ``all``."""
    script = ROOT / "docker" / "requirements.py"
    subprocess.run([sys.executable, script, flavour, "all", tmp_path, *options], check=True, cwd=ROOT)
    return (
        (tmp_path / "requirements.txt").read_text().splitlines(),
        (tmp_path / "constraints.txt").read_text().splitlines(),
    )


def test_the_image_runs_the_readme_main_job_with_its_extras_and_ci_pins(tmp_path: Path) -> None:
    install, _, run = _readme_commands()[0].rpartition(" && ")
    extras = re.search(r'-e "\.\[(.*?)\]"', install).group(1)
    assert f"EXTRAS={extras}" in _args("deps", "ARG")
    assert "-c constraints.txt" in install and any("constraints.txt" in c for c in _args("deps", "COPY"))
    assert _args("runtime", "CMD") == [str(run.split()).replace(chr(39), chr(34))]  # ["dualwatch", "demo"]
    # the cpu flavour installs constraints.txt as it is, and every requirement of the README's extras
    requirements, constraints = _requirements(tmp_path, "cpu")
    assert constraints == (ROOT / "constraints.txt").read_text().splitlines()
    assert {"torch>=2.1", "paddlepaddle>=2.6", "visualdl>=2.5", "tensorboard>=2.10"} <= set(requirements)


def test_ci_installs_what_the_readme_test_command_installs() -> None:
    tests = _readme_commands()[1]
    install = re.search(r"pip install (.*?) &&", tests).group(1)
    assert f"pip install -q {install}\n" in (ROOT / ".ci" / "run").read_text()
    assert tests.endswith("&& python -m pytest")


def test_the_cuda_flavour_takes_pypi_torch_and_paddlepaddle_gpu_at_the_pinned_version(tmp_path: Path) -> None:
    index = "https://www.paddlepaddle.org.cn/packages/stable/cu129/"
    requirements, constraints = _requirements(tmp_path, "cuda", "--paddle-index", index)
    paddle = next(
        line for line in (ROOT / "constraints.txt").read_text().splitlines() if "paddlepaddle==" in line
    )
    assert f"--extra-index-url {index}" in requirements and "paddlepaddle-gpu>=2.6" in requirements
    assert paddle.replace("paddlepaddle", "paddlepaddle-gpu") in constraints and paddle not in constraints
    assert not any("download.pytorch.org" in line for line in requirements + constraints)


def test_dependencies_are_installed_in_a_layer_before_the_source_is_copied() -> None:
    """A source edit must reuse the gigabytes of dependencies (and the compiled C parts): only the
    files that name the dependencies come before their install, the C sources before their build,
    the whole source after both, in a later stage."""
    deps = _stages()["deps"]
    copies = [args for name, args in deps if name == "COPY"]
    assert copies == [
        "setup.py constraints.txt ./",
        "dualwatch/_version.py dualwatch/",
        "docker/requirements.py docker/",
    ]
    assert any(name == "RUN" and "pip install -r" in args for name, args in deps)
    assert _args("kernel", "FROM") == ["deps AS kernel"] and _args("kernel", "COPY") == [
        "dualwatch/*.c dualwatch/"
    ]
    assert _args("builder", "FROM") == ["kernel AS builder"] and _args("builder", "COPY") == [". ."]


def test_the_runtime_is_the_venv_and_wheel_without_a_compiler_as_a_user_under_tini() -> None:
    runtime = _stages()["runtime"]
    assert _args("runtime", "FROM") == ["base AS runtime"]
    assert "COPY --from=deps /opt/venv /opt/venv" in [f"{n} {a}" for n, a in runtime]
    assert not any("gcc" in args or "pip install -e" in args for _, args in runtime)
    # dualwatch's wheel (not an editable install), copied over the venv last
    builder = " ".join(_args("builder", "RUN"))
    assert "python3 -m build --wheel" in builder and "python3 -m installer --destdir /overlay" in builder
    assert runtime[-1] == ("COPY", "--from=builder /overlay/ /")
    assert "gcc" in " ".join(_args("deps", "RUN"))
    assert _args("runtime", "USER") == ["dualwatch"] and _args("runtime", "WORKDIR") == ["/app"]
    assert _args("runtime", "ENTRYPOINT") == ['["tini", "--"]'] and "tini" in " ".join(_args("base", "RUN"))
    assert _args("runtime", "EXPOSE") == ["8040 6006"]


def test_the_bases_are_pinned_by_digest_and_output_is_unbuffered_without_a_pip_cache() -> None:
    pins = dict(arg.split("=", 1) for arg in _args("", "ARG") if "=" in arg)
    assert pins["CPU_BASE"].startswith("python:3.11-slim") and pins["CUDA_BASE"].startswith("nvidia/cuda:")
    for base in (pins["CPU_BASE"], pins["CUDA_BASE"]):
        assert re.search(r"@sha256:[0-9a-f]{64}$", base), base
    env = " ".join(_args("base", "ENV"))
    assert "PYTHONUNBUFFERED=1" in env and "PIP_NO_CACHE_DIR=1" in env


def test_the_dockerignore_leaves_out_everything_the_gitignore_does() -> None:
    """.gitignore's patterns without a leading / match at any depth; .dockerignore's only with **/."""
    dockerignore = {
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] not in ("", "#")
    }
    for pattern in (ROOT / ".gitignore").read_text().split():
        assert (pattern[1:] if pattern.startswith("/") else f"**/{pattern}") in dockerignore, pattern


def test_compose_serves_both_viewers_and_monitors_the_runs_the_image_writes() -> None:
    """The demo runs in the image's WORKDIR with its default --logdir, so every service shares that
    folder; the viewers listen on all interfaces (a container's published port needs it)."""
    logdir = next(p.default for p in main.commands["demo"].params if p.name == "logdir")
    runs = f"{_args('runtime', 'WORKDIR')[-1]}/{logdir}"
    services = _compose()["services"]
    assert set(services) == {"train", "visualdl", "tensorboard", "monitor"}
    for service in services.values():
        assert f"runs:{runs}" in service["volumes"]
    checks = {"visualdl": (8040, "/alive"), "tensorboard": (6006, "/data/runs")}
    for name, (port, path) in checks.items():
        assert services[name]["command"] == f"{name} --logdir {runs} --host 0.0.0.0 --port {port}"
        assert services[name]["ports"] == [f"{port}:{port}"]
        assert f"http://localhost:{port}{path}" in " ".join(services[name]["healthcheck"]["test"])
    assert services["train"]["command"] == "${TRAIN_COMMAND:-dualwatch demo}"
    assert services["monitor"]["depends_on"] == {"train": {"condition": "service_healthy"}}


@pytest.mark.parametrize("service", ["train", "monitor"])
def test_the_compose_dualwatch_commands_are_ones_the_cli_accepts(service: str) -> None:
    command = re.sub(r"\$\{\w+:-(.*)\}", r"\1", _compose()["services"][service]["command"]).split()
    assert command[0] == "dualwatch"
    main.commands[command[1]].make_context(command[1], command[2:])  # raises on an unknown option


def test_the_readme_docker_commands_are_the_ones_the_check_script_runs() -> None:
    """Word for word, except the machine-local build arguments docker/check.sh adds to `docker build`:
    each README command stands whole in the script, ended by the line, a redirection, a pipe or `)`."""
    section = _readme().split("## Docker", 1)[1].split("\n## ", 1)[0]
    readme = [
        line.split("  #")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.startswith("docker ")
    ]
    script = (ROOT / "docker" / "check.sh").read_text().replace('"${BUILD_ARGS[@]}" ', "")
    unchecked = [
        command
        for command in readme
        if not re.search(rf"(^|\s|\$\(){re.escape(command)}(?=\s*($|\d?>|[|&;)]))", script, re.M)
    ]
    assert readme
    assert unchecked == []
