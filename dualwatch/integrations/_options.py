"""Options every integration takes the same way, whatever its host framework calls them.

The check frequency is ``every`` everywhere; each integration also accepts its host's own
spelling (``log_freq`` in Paddle's callbacks, ``check_frequency`` in the StableSR edge monitor
callback, ``interval`` in MMEngine), so a config written for the host's tools keeps working.
"""

from __future__ import annotations

DEFAULT_EVERY = 10


def frequency(every: int | None, **aliases: int | None) -> int:
    """``every``, or one of the host's spellings of it (``log_freq=``); different values are an error."""
    given = {name: value for name, value in {"every": every, **aliases}.items() if value is not None}
    for name, value in given.items():  # checked where the callback is built, not when training starts
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}= must be an int number of steps, got {type(value).__name__} {value!r}")
        if value < 1:
            raise ValueError(f"{name}= must be >= 1 (check every N steps), got {value}")
    if len(set(given.values())) > 1:
        both = ", ".join(f"{name}={value}" for name, value in given.items())
        raise ValueError(f"{both} all set the check frequency: pass only one of them")
    return next(iter(given.values()), DEFAULT_EVERY)
