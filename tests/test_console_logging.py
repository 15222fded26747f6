"""Console blocks go through the ``dualwatch`` logger: above progress bars, silenced or routed by ``logging``.

Each case runs in a fresh interpreter, because the routing depends on the process's logging
configuration (pytest itself puts handlers on the root logger).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dualwatch._selection import module_prefix
from dualwatch.integrations._options import frequency

WATCH = """
import logging, sys, torch, dualwatch
{setup}
model = torch.nn.Linear(3, 2)
w = dualwatch.Watcher(model, every=1, logdir=None)
{loop}
"""
STEP = """
for step in range(3):
    model(torch.ones(1, 3)).sum().backward()
    {tick}
    w.step(step)
"""


def _run(setup: str = "", loop: str = STEP.format(tick="")) -> str:
    script = WATCH.format(setup=setup, loop=loop)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()  # bytes: text mode would turn the bar's \r into \n


def test_without_logging_configured_the_block_prints_on_stdout() -> None:
    out = _run()
    assert [int(s) for s in re.findall(r"^Model Monitor - Step (\d+)$", out, re.M)] == [0, 1, 2]


def test_the_root_handler_paddles_import_adds_does_not_divert_the_block_to_stderr() -> None:
    out = _run("import paddle\nassert logging.getLogger().handlers  # Paddle's own stderr handler")
    assert [int(s) for s in re.findall(r"^Model Monitor - Step (\d+)$", out, re.M)] == [0, 1, 2]


def test_the_dualwatch_loggers_level_silences_the_block() -> None:
    assert _run('logging.getLogger("dualwatch").setLevel(logging.WARNING)') == ""


def test_a_configured_root_logger_receives_the_block_instead_of_stdout(tmp_path: Path) -> None:
    out = _run(f"logging.basicConfig(filename={str(tmp_path / 'train.log')!r}, level=logging.INFO)")
    assert out == ""
    text = (tmp_path / "train.log").read_text()
    assert "Model Monitor - Step 2" in text and "INFO:dualwatch:" in text


def test_a_tqdm_bar_is_cleared_before_the_block_and_redrawn_after_it() -> None:
    loop = "from tqdm import tqdm\nwith tqdm(total=3, file=sys.stdout, mininterval=0) as bar:" + STEP.replace(
        "\n", "\n    "
    ).format(tick="bar.update(1)")
    out = _run(loop=loop)
    # tqdm.write clears the bar's line (\r, blanks, \r) so each block starts at column 0; a print
    # would have glued the block's first rule to the end of the bar's line
    assert len(re.findall(r"\r *\r={80}\nModel Monitor - Step \d\n", out)) == 3
    assert out.count("3/3") >= 1  # the bar is drawn again after the blocks


NAMES = ["", "model", "model.edge_processor", "model.edge_processor.backbone", "a.blk", "b.blk"]


def test_a_module_name_finds_a_unique_nested_submodule_by_its_own_name() -> None:
    assert module_prefix("edge_processor", NAMES) == "model.edge_processor."
    assert module_prefix("model.edge_processor", NAMES) == "model.edge_processor."


def test_an_ambiguous_nested_name_asks_for_the_full_path() -> None:
    with pytest.raises(ValueError, match=r"names 2 submodules: a\.blk, b\.blk\. Pass the full path"):
        module_prefix("blk", NAMES)


def test_an_unknown_module_lists_close_nested_matches() -> None:
    with pytest.raises(ValueError, match=r"Close matches: model\.edge_processor"):
        module_prefix("edge_procesor", NAMES)


def test_the_frequency_is_every_or_the_hosts_spelling_but_not_two_different_values() -> None:
    assert frequency(None) == 10
    assert frequency(None, log_freq=5) == 5
    assert frequency(5, interval=5) == 5
    with pytest.raises(ValueError, match="every=4, log_freq=5 all set the check frequency: pass only one"):
        frequency(4, log_freq=5)
