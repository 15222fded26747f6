"""Write the image's pip requirements and constraints, from setup.py and constraints.txt alone.

Why: the Dockerfile installs the dependencies in a layer of their own, before the source is
copied, so that editing the source rebuilds in seconds instead of reinstalling gigabytes. That
layer may see only the files that name the dependencies, so this reads ``setup.py``'s
``install_requires`` and extras (without building dualwatch) and ``constraints.txt``'s pins.

The flavour picks the framework builds:
- ``cpu``: constraints.txt as it is; its ``--extra-index-url`` line (the CPU torch index) makes
  pip take ``torch==2.13.0+cpu`` over PyPI's CUDA build.
- ``cuda``: that index line dropped (PyPI's default torch is the CUDA build) and paddlepaddle
  swapped for paddlepaddle-gpu at the same pinned version, from Paddle's own index
  (``--paddle-index``; PyPI has no paddlepaddle-gpu 3.x).

Usage: python3 docker/requirements.py FLAVOUR EXTRAS OUTDIR [--paddle-index URL]
writes OUTDIR/requirements.txt (which names OUTDIR/constraints.txt) for ``pip install -r``.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path
from unittest import mock

FLAVOURS = ("cpu", "cuda")


def setup_requirements(setup_py: Path, extras: list[str]) -> list[str]:
    """install_requires plus the given extras, as setup.py declares them (setup() is not run)."""
    with mock.patch("setuptools.setup") as setup:
        runpy.run_path(str(setup_py), run_name="__main__")
    declared = setup.call_args.kwargs
    unknown = sorted(set(extras) - set(declared["extras_require"]))
    if unknown:
        sys.exit(f"unknown extra(s) {unknown}: setup.py declares {sorted(declared['extras_require'])}")
    requirements = list(declared["install_requires"])
    for extra in extras:
        requirements += [r for r in declared["extras_require"][extra] if r not in requirements]
    return requirements


def for_flavour(lines: list[str], flavour: str) -> list[str]:
    """Requirement or constraint lines with the cuda flavour's swaps (cpu: unchanged)."""
    if flavour == "cpu":
        return lines
    out = []
    for line in lines:
        if line.startswith("--extra-index-url") and "download.pytorch.org" in line:
            continue  # the CPU torch index: without it pip takes PyPI's (CUDA) torch
        if line.startswith("paddlepaddle") and not line.startswith("paddlepaddle-gpu"):
            line = "paddlepaddle-gpu" + line[len("paddlepaddle") :]
        out.append(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flavour", choices=FLAVOURS)
    parser.add_argument("extras", help="comma-separated setup.py extras, e.g. all")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--paddle-index", default="", help="index of paddlepaddle-gpu (cuda flavour)")
    args = parser.parse_args()

    root = Path(__file__).resolve().parent.parent
    extras = [e for e in args.extras.split(",") if e]
    requirements = for_flavour(setup_requirements(root / "setup.py", extras), args.flavour)
    constraints = for_flavour((root / "constraints.txt").read_text().splitlines(), args.flavour)
    options = (
        [f"--extra-index-url {args.paddle_index}"] if args.flavour == "cuda" and args.paddle_index else []
    )

    args.outdir.mkdir(parents=True, exist_ok=True)
    (args.outdir / "constraints.txt").write_text("\n".join(constraints) + "\n")
    (args.outdir / "requirements.txt").write_text(
        "\n".join([*options, f"-c {args.outdir / 'constraints.txt'}", *requirements]) + "\n"
    )


if __name__ == "__main__":
    main()
