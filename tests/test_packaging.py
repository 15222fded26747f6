"""The Dockerfile installs exactly as the README tells users to (no Docker engine here to build it)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(python3 -m venv .*?)\n```", (ROOT / "README.md").read_text())


def test_the_dockerfile_runs_the_readme_install_and_main_job() -> None:
    main_job = _readme_commands()[0]
    install, _, run = main_job.rpartition(" && ")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"RUN {install}\n" in dockerfile
    assert f"CMD {str(run.split()).replace(chr(39), chr(34))}" in dockerfile


def test_ci_installs_what_the_readme_test_command_installs() -> None:
    tests = _readme_commands()[1]
    install = re.search(r"pip install (.*?) &&", tests).group(1)
    assert f"pip install -q {install}\n" in (ROOT / ".ci" / "run").read_text()
    assert tests.endswith("&& python -m pytest")
