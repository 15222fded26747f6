"""A recorded output's numbers at a glance: each tensor's mean, std, min and max go to a
:class:`dualwatch.Writer` as ``capture/<alias><leaf>/<stat>``, so a capture shows up beside the
training curves without opening its files."""

from __future__ import annotations

from typing import Any

import numpy as np

from dualwatch._capture.outputs import leaves
from dualwatch.backends import Framework


def log_stats(writer: Any, step: int, alias: str, data: Any, fw: Framework) -> None:
    """Logs the statistics of every tensor in ``data`` (one layer's output) at ``step``."""
    values = {}
    for path, tensor in leaves(data, fw.is_tensor):
        array = fw.to_numpy(tensor).astype(np.float64, copy=False)
        if array.size:
            for stat, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
                values[f"capture/{alias}{path}/{stat}"] = float(fn(array))
    writer.log(step, values)
