"""The ``dualwatch`` logger: console blocks and notices go through ``logging``, not ``print``.

Why: a ``print`` tears a progress bar, cannot be silenced and never reaches a training log
file. Through the ``dualwatch`` logger, ``logging.getLogger("dualwatch").setLevel(logging.WARNING)``
silences the blocks, a handler the user adds (or ``logging.basicConfig(filename=...)``) receives
them, and integrations hand them to their host's logger (MMEngine's ``runner.logger``).

Routing follows Lightning's own rule: while neither the ``dualwatch`` logger nor the root logger
has a handler, the first message installs :class:`ProgressSafeHandler` on ``dualwatch`` (and
stops propagation, so nothing prints twice); once the user configured logging, the messages
propagate to their handlers instead. ``import paddle`` puts a stderr handler of its own on the
root logger (``paddle.distributed.utils.log_utils.get_logger``); that one is Paddle's, not the
user's configuration, and does not count.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("dualwatch")
#: the format of the handler ``import paddle`` adds to the root logger
PADDLE_ROOT_FORMAT = "[%(asctime)-15s] [%(levelname)8s] %(filename)s:%(lineno)s - %(message)s"


class ProgressSafeHandler(logging.Handler):
    """Writes each message to the current ``sys.stdout``, above any progress bar.

    ``sys.stdout`` is looked up at each message, so rich's ``Progress`` (which redirects it
    while it runs) and pytest's capture see the text; while a tqdm bar is showing (Lightning's
    default bar is one), the text goes through ``tqdm.write``, which clears and redraws the bars.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            tqdm = _active_tqdm()
            if tqdm is not None:
                tqdm.write(text, file=sys.stdout)
            else:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
        except Exception:
            self.handleError(record)


def _active_tqdm() -> type | None:
    """tqdm's class while one of its bars is open; tqdm is not imported for this."""
    module = sys.modules.get("tqdm")
    cls = getattr(module, "tqdm", None)
    return cls if cls is not None and getattr(cls, "_instances", None) else None


def _user_configured(root: logging.Logger) -> bool:
    """Whether the root logger has a handler other than the one ``import paddle`` adds."""
    return any(getattr(h.formatter, "_fmt", None) != PADDLE_ROOT_FORMAT for h in root.handlers)


def to_stdout() -> None:
    """Sends the ``dualwatch`` logger's messages to stdout through :class:`ProgressSafeHandler`
    (and only there), unless it has a handler already: for applications (``dualwatch demo``) that
    own the process's output."""
    if not logger.handlers:
        logger.addHandler(ProgressSafeHandler())
        logger.propagate = False


def info(message: str) -> None:
    """Logs ``message`` on the ``dualwatch`` logger at INFO, routed as the module docstring says."""
    if not _user_configured(logging.getLogger()):
        to_stdout()
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.info(message)
