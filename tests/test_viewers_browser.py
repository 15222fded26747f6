"""What VisualDL and TensorBoard show first on the demo's runs, in a real headless Chromium.

Neither viewer lays its charts out in the order the tags were written (the write order only
reaches tag lists: ``metrics.jsonl``, the servers' APIs, ``test_demo_served.py``):

* VisualDL 2.5.3 (``server/dist/_dist_/components/ChartPage.js``) groups scalar tags by the part
  before the first ``/``, sorts the groups case-insensitively and opens only the first;
* TensorBoard 2.21's Time Series (``webfiles.zip``, ``index.js``: ``zD``/``Qy``) sorts them by a
  case-sensitive natural order and expands the first two.

So the writer repeats the loss and the global gradient norm in a group named to sort first in
both, ``0_overview``. These tests open each viewer as a user does, read the groups from the page
(VisualDL's ``h3`` titles, TensorBoard's ``.group-title``), which ones are open, the charts' titles
and whether the first charts have drawn lines: coloured pixels on the chart's canvas (axes, grid
and labels are grey). The screenshots go to the folder printed at the start (``-s`` shows it).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
from _servers import BIN, both_servers
from playwright.sync_api import sync_playwright

pytestmark = pytest.mark.browser

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
OVERVIEW = "0_overview"  # the loss and the global gradient norm (dualwatch._tags.OVERVIEW)
# Seconds for a viewer to list its groups, then to draw its open charts. VisualDL renders its
# first group's 140 charts at once, which holds the page's thread for 20 s on an idle 2-core
# machine and for over 60 s on a loaded one: every page call waits up to LIST.
LIST, DRAW = 180.0, 5.0


@dataclass
class View:
    """What a viewer shows on opening: its groups in page order, the open ones and their first charts."""

    groups: list[str]
    opened: list[str]
    charts: dict[str, list[int]] = field(default_factory=dict)  # open group -> coloured pixels per chart
    text: dict[str, str] = field(default_factory=dict)  # open group -> its text (TensorBoard's titles)
    screenshot: str = ""
    tags: set[str] = field(default_factory=set)  # the scalar tags the server lists


def coloured_pixels(png: bytes) -> int:
    """Pixels of a line's colour (saturated), not of the grey axes, grid and labels."""
    hsv = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2HSV)
    return int(((hsv[..., 1] > 80) & (hsv[..., 2] > 60)).sum())


def _visualdl(page: Any) -> tuple[list[str], dict[str, list[Any]], dict[str, str]]:
    """Groups (``h3`` titles), the canvases and text of each open group (its body holds ``.echarts``;
    ECharts draws the charts' titles on the canvas, out of the text)."""
    groups, canvases, text = [], {}, {}
    for title in page.query_selector_all("h3"):
        name = title.inner_text()
        groups.append(name)
        group = title.evaluate_handle("h => h.parentElement.parentElement")
        found = group.query_selector_all(".echarts canvas")
        if found:
            canvases[name] = found
            text[name] = group.inner_text()
    return groups, canvases, text


def _tensorboard(page: Any) -> tuple[list[str], dict[str, list[Any]], dict[str, str]]:
    """Groups (``.group-title``), the canvases and text of each expanded group's cards, in page order."""
    groups, canvases, text, current = [], {}, {}, None
    for element in page.query_selector_all(".group-title, scalar-card"):
        if element.evaluate("e => e.tagName") != "SCALAR-CARD":
            current = element.get_attribute("title")
            if current:  # the "Pinned" section has no title attribute
                groups.append(current)
            continue
        canvas = element.query_selector("canvas")
        if current in groups and canvas:
            canvases.setdefault(current, []).append(canvas)
            text[current] = text.get(current, "") + element.inner_text() + "\n"
    return groups, canvases, text


def _open(browser: Any, url: str, read: Any, ready: str, shot: str) -> View:
    """The view once its groups are listed (``ready`` is on the page) and every open group's first
    two charts have drawn lines, or ``DRAW`` seconds after the listing."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(LIST * 1000)
    page.goto(url)
    page.wait_for_selector(ready, state="attached", timeout=LIST * 1000)
    deadline = time.monotonic() + DRAW
    while True:
        groups, canvases, text = read(page)
        charts = {g: [coloured_pixels(c.screenshot()) for c in found[:2]] for g, found in canvases.items()}
        drawn = charts and all(n > 0 for counts in charts.values() for n in counts)
        if drawn or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    page.screenshot(path=shot)
    page.close()
    print(f"{url}: {groups}, open {list(charts)}, coloured pixels of their first charts {charts}")
    return View(groups, list(canvases), charts, text, shot)


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, View]]:
    if CHROMIUM is None:
        pytest.skip(
            "no Chromium on PATH (chromium, chromium-browser or google-chrome): install it from the OS "
            "packages, e.g. apt-get install chromium (.ci/run does)"
        )
    root = tmp_path_factory.mktemp("viewers")
    shots = root / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots of the viewers: {shots}")
    logdir = str(root / "runs")
    argv = [os.path.join(BIN, "dualwatch"), "demo", "--steps", "4", "--every", "2", "--logdir", logdir]
    done = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(glob.glob(os.path.join(logdir, "*", "logs_*", "metrics.jsonl"))) == 2
    with (
        both_servers(logdir, str(root), vdl_cache=0.5, tb_reload=1) as (vdl, tb),
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            visualdl = _open(
                browser, f"{vdl.base}/app/scalar", _visualdl, ".total", str(shots / "visualdl.png")
            )
            visualdl.tags = {tag for tags in vdl.vdl("scalar/tags")["tags"] for tag in tags}
            yield {
                "visualdl": visualdl,
                "tensorboard": _open(
                    browser,
                    f"{tb.base}/#timeseries",
                    _tensorboard,
                    "scalar-card canvas",
                    str(shots / "tensorboard.png"),
                ),
            }
        finally:
            browser.close()


GROUPS = [OVERVIEW, "Learning_Rate", "Loss", "Model", "Time", "edge_processor", "train"]


def test_visualdl_sorts_groups_ignoring_case_and_opens_only_the_first(views: dict[str, View]) -> None:
    view = views["visualdl"]
    assert view.groups == sorted(GROUPS, key=str.upper), view
    assert view.opened == [OVERVIEW], view


def test_tensorboard_sorts_groups_by_case_and_opens_the_first_two(views: dict[str, View]) -> None:
    view = views["tensorboard"]
    assert view.groups == sorted(GROUPS), view
    assert view.opened == [OVERVIEW, "Learning_Rate"], view


@pytest.mark.parametrize("viewer", ["visualdl", "tensorboard"])
def test_viewer_opens_on_the_loss_and_the_gradient_norm_with_drawn_lines(
    views: dict[str, View], viewer: str
) -> None:
    view = views[viewer]
    assert view.opened[0] == OVERVIEW, view
    overview = {f"{OVERVIEW}/loss", f"{OVERVIEW}/grad_norm"}
    if viewer == "tensorboard":  # its cards' titles are text, broken at the "/"
        assert all(tag in "".join(view.text[OVERVIEW].split()) for tag in overview), view
    else:  # VisualDL's are drawn on the canvas: the group's charts are the tags its server lists in it
        assert {tag for tag in view.tags if tag.startswith(f"{OVERVIEW}/")} == overview, view
    assert len(view.charts[OVERVIEW]) == 2 and all(n > 0 for n in view.charts[OVERVIEW]), view
