"""The ``dualwatch`` command. Imports stay inside commands so ``--help`` starts fast."""

from __future__ import annotations

import click

from dualwatch._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dualwatch")
def main() -> None:
    """Training telemetry for PyTorch and PaddlePaddle."""


@main.command()
@click.option(
    "--backend",
    type=click.Choice(["torch", "paddle", "both"]),
    default="both",
    show_default=True,
    help="Framework(s) to train with.",
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=30, show_default=True, help="Training steps per run."
)
@click.option(
    "--every", type=click.IntRange(min=1), default=10, show_default=True, help="Check every N steps."
)
@click.option(
    "--logdir", default="runs", show_default=True, help="Directory that receives one run per framework."
)
def demo(backend: str, steps: int, every: int, logdir: str) -> None:
    """Train a small edge-map model on synthetic images, watched by dualwatch."""
    from dualwatch.demo import run_demo

    frameworks = ["torch", "paddle"] if backend == "both" else [backend]
    for framework in frameworks:
        run_dir = run_demo(framework, steps=steps, every=every, logdir=logdir)
        click.echo(f"{framework}: metrics in {run_dir}/metrics.jsonl")
