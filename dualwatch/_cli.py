"""The ``dualwatch`` command. Imports stay inside commands so ``--help`` starts fast."""

from __future__ import annotations

from typing import Any, Callable

import click

from dualwatch._errors import NO_LOGS, DualwatchError
from dualwatch._version import __version__
from dualwatch.backends import FRAMEWORKS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dualwatch")
def main() -> None:
    """Training telemetry for PyTorch and PaddlePaddle."""


@main.command()
@click.option(
    "--backend",
    type=click.Choice([*FRAMEWORKS, "both"]),
    default="both",
    show_default=True,
    help="Framework(s) to train with.",
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=60, show_default=True, help="Training steps per run."
)
@click.option(
    "--every", type=click.IntRange(min=1), default=10, show_default=True, help="Check every N steps."
)
@click.option(
    "--logdir", default="runs", show_default=True, help="Directory that receives one run per framework."
)
def demo(backend: str, steps: int, every: int, logdir: str) -> None:
    """Train the StableSR-style EdgeMapProcessor on synthetic images, watched by dualwatch.

    Writes VisualDL, TensorBoard and metrics.jsonl under LOGDIR/<framework>/, then prints each
    run's `dualwatch monitor --once` report and the command that serves the runs.
    """
    from dualwatch import _log
    from dualwatch._demo import check_logdir, run_all

    frameworks = list(FRAMEWORKS) if backend == "both" else [backend]
    try:
        check_logdir(logdir, frameworks)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--logdir") from None
    _log.to_stdout()  # the demo's own output: the monitor blocks go above its progress bar
    run_all(frameworks, steps=steps, every=every, logdir=logdir)


def _run_choice(verb: str, default: str = "the newest") -> Callable[[Any], Any]:
    """LOGDIR (also --logdir, and --log_dir as the VisualDL guide spells it) and --run."""

    def decorate(command: Any) -> Any:
        run_help = f"Run to {verb} (path under LOGDIR; a directory: its newest run); default {default}."
        command = click.option("--run", "run_name", metavar="NAME", help=run_help)(command)
        command = click.option(
            "--logdir",
            "--log_dir",
            "logdir_option",
            metavar="DIR",
            help="Same as LOGDIR (--log_dir also works). Default: $DUALWATCH_LOGDIR, else runs.",
        )(command)
        return click.argument("logdir", required=False)(command)

    return decorate


class Seconds(click.ParamType):
    """A finite number of seconds above 0 and at most ``most``: ``nan`` or ``inf`` would pass a plain
    range check (no comparison with NaN fails) and then make ``time.sleep`` raise after the first
    report, or make ``--stall`` a bound that can never be crossed."""

    name = "seconds"

    def __init__(self, most: float, zero: bool = False) -> None:
        self.most = most
        self.zero = zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        import math

        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        above_least = seconds >= 0 if self.zero else seconds > 0
        if not (math.isfinite(seconds) and above_least and seconds <= self.most):
            least = "0 or more" if self.zero else "above 0"
            self.fail(
                f"{value!r} is not a number of seconds {least} and at most {self.most:.0f}: "
                f"give one such as 30",
                param,
                ctx,
            )
        return seconds


#: the longest --interval: a day (``time.sleep`` overflows past about 292 years)
MAX_INTERVAL = 86400.0
#: the longest --stall: a year, already longer than any training run is silent
MAX_STALL = 365 * 86400.0


def _seconds(name: str, default: float, most: float, help: str, zero: bool = False) -> Any:
    return click.option(name, type=Seconds(most, zero), default=default, show_default=True, help=help)


@main.command()
@_run_choice("show alone", "every run, one line each")
@_seconds("--interval", 30.0, MAX_INTERVAL, "Seconds between polls (at most a day).")
@click.option(
    "--once",
    is_flag=True,
    help="Print one report and exit: 0 healthy, 1 alert, 2 usage error, 3 no logs or no readable records.",
)
@click.option(
    "--monitor",
    "follow",
    is_flag=True,
    help="Follow the run(s), polling every --interval (the default; the VisualDL guide's spelling).",
)
@click.option(
    "--until-done",
    is_flag=True,
    help="Follow until every run has ended, then exit with the status --once gives on the final "
    "report. A run ends when its dualwatch Writer closes (one killed before close() is an alert); "
    "a run of another tool, once silent for --stall.",
)
@_seconds(
    "--grace",
    30.0,
    MAX_STALL,
    "With --until-done: how long every run must stay ended before the monitor exits, so that a run "
    "started right after the last one ended (the next job of a script) is waited for.",
    zero=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print each report as one line of JSON (one per run).")
@click.option("--tags", multiple=True, metavar="GLOB", help="Also show tags matching GLOB (repeatable).")
@_seconds("--stall", 300.0, MAX_STALL, "Alert when no record came for this many seconds.")
@click.option("--total-steps", type=click.IntRange(min=1), help="Steps the run will take, for the ETA.")
@click.option(
    "--rules",
    metavar="NAME|FILE",
    help="Normal ranges per tag glob: a built-in set (esam: the ESAM BiFusion guide's table) or a "
    "JSON or YAML file (./esam for a file named so).",
)
@click.option(
    "--on-alert",
    metavar="CMD",
    help="Run CMD (a shell command) once per newly raised alert, the alert as JSON on stdin and in "
    "DUALWATCH_ALERT_* variables; how a container pages someone.",
)
@click.pass_context
def monitor(
    ctx: click.Context,
    logdir: str | None,
    logdir_option: str | None,
    run_name: str | None,
    interval: float,
    once: bool,
    follow: bool,
    until_done: bool,
    grace: float,
    as_json: bool,
    tags: tuple[str, ...],
    stall: float,
    total_steps: int | None,
    rules: str | None,
    on_alert: str | None,
) -> None:
    """Follow the runs under LOGDIR (VisualDL, TensorBoard, metrics.jsonl, MMEngine) and report their health.

    One run (or --run NAME) gets the full report; many runs (a sweep) get one line each, alerts
    first. Reads only what was appended since the last poll. Alerts: NaN/Inf values, exploding
    or vanishing gradients, a stalled run, weights not updating, --rules violations.
    Exit status (--once, and --until-done once every run ended): 0 healthy, 1 an alert, 2 usage
    error (also a file or directory this user may not read), 3 no logs or no readable records.
    """
    import os
    import sys
    import time

    from dualwatch._following import Ends, Runs
    from dualwatch._report import Options, build_report
    from dualwatch._rules import rules_named
    from dualwatch._view import Display
    from dualwatch.readers import RunReader
    from dualwatch.readers._discover import display_name, list_runs, locate_run

    if once and (follow or until_done):
        flag = "--monitor" if follow else "--until-done"
        raise DualwatchError(f"--once and {flag} ask for opposite things: give one")
    logdir = _logdir(logdir, logdir_option)
    options = Options(
        stall=stall, total_steps=total_steps, rules=rules_named(rules) if rules else (), tags=tags
    )
    hook = None
    if on_alert:
        from dualwatch._alerts import AlertHook

        hook = AlertHook(on_alert)
    reader = None
    many = Runs(logdir, options)
    ends = Ends(grace) if until_done else None
    code = 0
    try:
        with Display(as_json=as_json, follow=not once, tty=sys.stdout.isatty()) as display:
            while True:
                try:
                    run_dirs = [locate_run(logdir, run_name)] if run_name else list_runs(logdir)
                    if len(run_dirs) == 1:
                        run_dir = run_dirs[0]
                        if reader is None or reader.run_dir != run_dir:
                            reader = RunReader(run_dir)
                        _poll(reader)
                        name = display_name(run_dir, logdir)
                        reports = [build_report(reader, time.time(), options, name)] if reader.series else []
                        where = f"{run_dir}{_damage(reader)}"
                    else:
                        reports = many.poll(run_dirs)
                        if not any(r.records or r.alerts for r in reports):
                            reports = []
                        where = f"any of {len(run_dirs)} runs under {logdir}"
                    done = False
                    if ends is not None:
                        reports, done = ends.check(run_dirs, reports)
                    if not reports:  # waited out while following, unless the runs have ended
                        if done:
                            summary = ends.summary()
                            raise DualwatchError(
                                f"no scalar records in {where}, and {summary}", exit_code=NO_LOGS
                            )
                        raise DualwatchError(f"no scalar records yet in {where}", transient=True)
                except DualwatchError as err:
                    if once or not err.transient:
                        raise
                    display.waiting(err.message)
                else:
                    code = 1 if any(not r.ok for r in reports) else 0
                    display.show_runs(reports)
                    if hook is not None:
                        hook.check(reports)
                    if once:
                        ctx.exit(code)
                    if done:
                        click.echo(f"dualwatch monitor: {ends.summary()}: exit status {code}", err=True)
                        ctx.exit(code)
                time.sleep(interval)
    except KeyboardInterrupt:
        ctx.exit(0)
    except BrokenPipeError:  # whoever read the pipe (head, grep -m1) is gone: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        ctx.exit(code)


def _poll(reader: Any) -> None:
    """``reader.poll()``; a log file it could not read (permission denied) is an error that names
    it, since a report without that file's records would be wrong."""
    reader.poll()
    for path, reason in reader.unreadable.items():
        raise DualwatchError(f"cannot read log file: {path} ({reason})")


def _damage(reader: Any) -> str:
    return f" ({reader.corrupt} damaged records skipped)" if reader.corrupt else ""


def _logdir(logdir: str | None, logdir_option: str | None) -> str:
    """LOGDIR, else --logdir/--log_dir, else $DUALWATCH_LOGDIR, else ``runs``."""
    import os

    if logdir and logdir_option and os.path.normpath(logdir) != os.path.normpath(logdir_option):
        raise DualwatchError(f"two log directories given: {logdir} and --logdir {logdir_option}")
    return logdir or logdir_option or os.environ.get("DUALWATCH_LOGDIR") or "runs"


@main.command()
@_run_choice("plot")
@click.option(
    "--tags",
    multiple=True,
    metavar="GLOB",
    help="Plot the tags matching GLOB (repeatable). Default: loss, learning rate, gradient norm, the rest.",
)
@click.option(
    "--max-panels", type=click.IntRange(min=1), default=16, show_default=True, help="Most curves drawn."
)
@click.option(
    "-o",
    "--output",
    default="curves.png",
    show_default=True,
    metavar="FILE",
    help="Image to write; the extension picks the format (png, svg, pdf).",
)
def plot(
    logdir: str | None,
    logdir_option: str | None,
    run_name: str | None,
    tags: tuple[str, ...],
    max_panels: int,
    output: str,
) -> None:
    """Render a run's scalar curves to an image, for machines without a browser.

    One panel per tag: the raw values faint, EMA-smoothed (0.6) on top, NaN/Inf marked in red.
    """
    from dualwatch._plot import choose_tags, plot_run
    from dualwatch.readers import RunReader
    from dualwatch.readers._discover import display_name, locate_run

    logdir = _logdir(logdir, logdir_option)
    run_dir = locate_run(logdir, run_name)
    reader = RunReader(run_dir)
    _poll(reader)
    if not reader.series:
        raise DualwatchError(f"no scalar records in {run_dir}{_damage(reader)}", exit_code=NO_LOGS)
    chosen, left_out = choose_tags(reader.series, tags, max_panels)
    if not chosen:
        known = ", ".join(sorted(reader.series)[:10])
        raise DualwatchError(f"no tag matches {' or '.join(tags)} in {run_dir} (tags: {known})")
    if left_out:
        click.echo(
            f"dualwatch plot: {len(left_out)} more tags not drawn (--max-panels {max_panels}); "
            "choose with --tags GLOB",
            err=True,
        )
    plot_run(reader, output, chosen, display_name(run_dir, logdir))
    click.echo(output)


@main.command()
@click.argument("logdir", required=False)
@click.option(
    "--logdir",
    "--log_dir",
    "logdir_option",
    metavar="DIR",
    help="Same as LOGDIR (--log_dir also works). Default: $DUALWATCH_LOGDIR, else runs.",
)
@click.option(
    "--host",
    metavar="ADDRESS",
    help="Address both servers listen on. Default: 0.0.0.0 inside a container (/.dockerenv, "
    "/run/.containerenv, $container, Kubernetes), so a published port reaches them; else 127.0.0.1.",
)
@click.option(
    "--visualdl-port", type=click.IntRange(1, 65535), default=8040, show_default=True, help="VisualDL's port."
)
@click.option(
    "--tensorboard-port",
    type=click.IntRange(1, 65535),
    default=6006,
    show_default=True,
    help="TensorBoard's port.",
)
def serve(
    logdir: str | None, logdir_option: str | None, host: str | None, visualdl_port: int, tensorboard_port: int
) -> None:
    """Serve LOGDIR with VisualDL and TensorBoard at once, until Ctrl-C or SIGTERM stops both.

    Starts the real `visualdl` and `tensorboard` servers of this Python environment, waits until
    each answers, then prints their URLs. LOGDIR is created when missing: serve first, train
    after. With one viewer installed, serves that one (and says which extra adds the other).
    Exit status: 0 when stopped by Ctrl-C or SIGTERM; 2 when a viewer cannot serve (a port already
    taken, a server that exits): the other is stopped and the message names the port.
    """
    from dualwatch._serve import default_host
    from dualwatch._serve import serve as serve_logdir

    ports = {"visualdl": visualdl_port, "tensorboard": tensorboard_port}
    if visualdl_port == tensorboard_port:
        raise DualwatchError(
            f"--visualdl-port and --tensorboard-port are both {visualdl_port}: give each viewer its own port"
        )
    serve_logdir(_logdir(logdir, logdir_option), host or default_host(), ports)


@main.command()
@click.argument("run")
@click.option("--to", metavar="tensorboard|visualdl", help="The format to write (required).")
@click.option(
    "-o", "--out", metavar="DIR", help="The new run directory. Default: RUN_tensorboard or RUN_visualdl."
)
def convert(run: str, to: str | None, out: str | None) -> None:
    """Rewrite a run's VisualDL logs for TensorBoard, or its TensorBoard logs for VisualDL.

    Scalars, histograms, images and text keep their tags, steps and wall times; RUN is only
    read. Prints the new run directory.
    """
    import warnings

    from dualwatch._convert import convert_run

    # --to is checked here and in convert_run, not by click, so that every error is one line
    if to is None:
        raise DualwatchError("say which format to write: --to tensorboard or --to visualdl")
    try:
        with warnings.catch_warnings(record=True) as caught:  # records left out: one line each
            warnings.simplefilter("always")
            done = convert_run(run, to, out)
    except ImportError as err:
        raise DualwatchError(f"{err}: pip install 'dualwatch[visualdl,tensorboard]'") from None
    except OSError as err:
        raise DualwatchError(str(err)) from None
    finally:
        for warning in caught:
            click.echo(f"dualwatch convert: {str(warning.message).removeprefix('dualwatch: ')}", err=True)
    click.echo(done)
