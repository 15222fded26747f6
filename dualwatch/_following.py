"""Following many runs at once for ``dualwatch monitor``: their readers and reports from poll to
poll (:class:`Runs`), and which of them have ended (:class:`Ends`, for ``--until-done``)."""

from __future__ import annotations

import os
import time

from dualwatch._report import Notice, Options, RunReport, aged, build_report, finished, with_alert
from dualwatch._runlock import ABANDONED, ABSENT, OPEN, writer_state
from dualwatch.readers import RunReader
from dualwatch.readers._discover import display_name

#: bytes from the end of each log file that a run of many is first read from (the last 25 steps of
#: 20 tags logged every step, hundreds of a loss logged alone): the first report of a sweep takes
#: seconds, not a read of every run's history; a tag not logged in that stretch shows once it is
MANY_TAIL = 16 << 10
#: advice on a log file the monitor of many runs cannot read
UNREADABLE_HINT = "give the monitor's user read access to it (chmod a+r, or the run's group)"
#: points per tag held for each run of many: the report's windows (rate, trend) fit in it
MANY_KEEP = 128


class Runs:
    """The runs of a logdir followed at once: one reader per run, kept from poll to poll and started
    near each file's end, and each run's last report, rebuilt only when its reader read something."""

    def __init__(self, logdir: str, options: Options) -> None:
        self.logdir = logdir
        self.options = options
        self.readers: dict[str, RunReader] = {}
        self._reports: dict[str, tuple[RunReport, float]] = {}

    def poll(self, run_dirs: list[str]) -> list[RunReport]:
        """One report per run in ``run_dirs``; the readers of runs gone from the logdir go."""
        for gone in self.readers.keys() - set(run_dirs):
            del self.readers[gone]
            self._reports.pop(gone, None)
        now = time.time()
        reports = []
        for run_dir in run_dirs:
            reader = self.readers.get(run_dir)
            if reader is None:
                reader = self.readers[run_dir] = RunReader(run_dir, tail=MANY_TAIL, keep=MANY_KEEP)
            reader.poll()
            known = self._reports.get(run_dir)
            if known is None or reader.changed or reader.unreadable:
                name = display_name(run_dir, self.logdir)
                report = build_report(reader, now, self.options, name)
                for path, reason in reader.unreadable.items():  # one run's bad file stops no other
                    why = f"cannot read log file: {path} ({reason}); its records are missing"
                    report = with_alert(report, Notice("unreadable", why, hint=UNREADABLE_HINT))
            else:
                report = aged(known[0], now - known[1], self.options)
            self._reports[run_dir] = (report, now)
            reports.append(report)
        return reports


class Ends:
    """Which followed runs have ended, for ``monitor --until-done``; each poll asks anew, so a run
    resumed after it ended is followed again.

    A dualwatch Writer holds ``<run>/.dualwatch.lock`` while it writes (:mod:`dualwatch._runlock`):
    the lock held means writing; the file gone means closed, when the lock was seen held before
    or the run has the Writer's ``metrics.jsonl`` (the monitor started after the run); the file
    left unlocked means the Writer ended without ``close()`` (killed, crashed), an alert. A run
    no Writer locked (another tool's) cannot say it finished: it ends once silent for ``--stall``,
    with the stall alert. The monitor is done when the same runs have all been ended for ``grace``
    seconds and at two polls in a row: a run that starts right after another (the demo trains
    torch, then imports paddle for seconds before its run appears) is waited for, and a Writer
    caught between creating its files and locking them is seen writing at the next poll.
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._held: set[str] = set()
        self._ended: dict[str, str] = {}
        self._ended_before: set[str] | None = None
        self._since = 0.0  # time.monotonic() when the runs were first seen all ended

    def check(self, run_dirs: list[str], reports: list[RunReport]) -> tuple[list[RunReport], bool]:
        """``reports`` as the ends make them (a closed run is not stalled, an abandoned one alerts),
        and whether the monitor is done."""
        by_dir = {r.run_dir: r for r in reports}
        ends = {run_dir: self._end(run_dir, by_dir.get(run_dir)) for run_dir in run_dirs}
        shown = []
        for report in reports:
            end = ends.get(report.run_dir)
            if end == "closed":
                report = finished(report)
            elif end == "abandoned":
                report = with_alert(report, Notice("unclosed", UNCLOSED, hint=UNCLOSED_HINT))
            shown.append(report)
        self._ended = {run_dir: end for run_dir, end in ends.items() if end is not None}
        ended = set(run_dirs) if len(self._ended) == len(run_dirs) else None
        again = ended is not None and ended == self._ended_before
        if not again:
            self._since = time.monotonic()
        done = again and time.monotonic() - self._since >= self.grace
        self._ended_before = ended
        return shown, done

    def summary(self) -> str:
        """``every run ended (2 closed, 1 abandoned)``, of the last poll."""
        counts = {end: list(self._ended.values()).count(end) for end in ("closed", "abandoned", "silent")}
        how = ", ".join(f"{n} {end}" for end, n in counts.items() if n)
        return f"{'the run' if len(self._ended) == 1 else 'every run'} ended ({how})"

    def _end(self, run_dir: str, report: RunReport | None) -> str | None:
        """``closed``, ``abandoned``, ``silent`` or None (not ended)."""
        state = writer_state(run_dir)
        if state == OPEN:
            self._held.add(run_dir)
            return None
        if state == ABANDONED:
            return "abandoned"
        written = run_dir in self._held or os.path.isfile(os.path.join(run_dir, "metrics.jsonl"))
        if state == ABSENT and written:
            return "closed"
        if report is not None and any(n.kind == "stalled" for n in report.alerts):
            return "silent"
        return None


#: the alert on a run whose Writer ended without close()
UNCLOSED = "the run's Writer ended without close() (killed or crashed): its last records may be missing"
UNCLOSED_HINT = "see the training's own output for why it stopped"
