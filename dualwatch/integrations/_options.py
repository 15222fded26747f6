"""Options every integration takes the same way, whatever its host framework calls them.

The check frequency is ``every`` everywhere; each integration also accepts its host's own
spelling (``log_freq`` in Paddle's callbacks, ``check_frequency`` in the StableSR edge monitor
callback, ``interval`` in MMEngine), so a config written for the host's tools keeps working.
"""

from __future__ import annotations

DEFAULT_EVERY = 10


def frequency(every: int | None, alias: str, value: int | None) -> int:
    """``every``, or the host's spelling ``alias`` of it; giving both with different values is an error."""
    if every is not None and value is not None and every != value:
        raise ValueError(
            f"every={every} and {alias}={value} both set the check frequency: pass only one of them"
        )
    chosen = every if every is not None else value
    return DEFAULT_EVERY if chosen is None else chosen
