"""Incremental readers for the logs dualwatch, VisualDL and TensorBoard write.

``RunReader(run_dir).poll()`` reads only what was appended since the last poll, never
consumes a record that is still being written, and skips and counts damaged records
instead of raising or stopping. ``find_runs(logdir)`` lists the run directories.
Neither imports torch, paddle, TensorFlow, the ``visualdl`` package or TensorBoard's server.
"""

from dualwatch.readers._discover import find_runs
from dualwatch.readers._run import RunReader
from dualwatch.readers._series import Series

__all__ = ["RunReader", "Series", "find_runs"]
