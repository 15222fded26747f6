"""The C scalar encoder writes, byte for byte, what the Python encoders (protobuf, crc32c, json)
write, and leaves to them what it does not take.

Each case encodes the same records twice: with ``_codec.codec`` (the C extension, built by the
install) and with it set to None (the protobuf/json path every format also has).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dualwatch._formats import _codec
from dualwatch._formats.jsonl import JsonlFormat
from dualwatch._formats.tensorboard import TensorBoardFormat
from dualwatch._formats.visualdl import VisualDLFormat
from dualwatch.records import Scalars, Text

FORMATS = [VisualDLFormat, TensorBoardFormat, JsonlFormat]


@pytest.fixture(autouse=True)
def _c_encoder_built() -> None:
    """Without the extension both encodings below would be the Python one and every test pass
    without testing anything: the test environment builds it (``pip install -e .`` with a C compiler)."""
    assert _codec.codec is not None, "the C scalar encoder is not built: pip install -e . with a C compiler"


def _both(format_class: type, records: list, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, bytes]:
    fast = format_class().encode(records)
    with monkeypatch.context() as patch:
        patch.setattr(_codec, "codec", None)
        slow = format_class().encode(records)
    return fast, slow


def _random_records(seed: int) -> list:
    rng = np.random.default_rng(seed)
    specials = [0.0, -0.0, 1.0, math.nan, math.inf, -math.inf, 1e300, -1e300, 5e-324, 3.4028235e38, 1e-7]
    tags = ["loss", "a/b/c", "héllo ✓ 步", "t" * 200, 'quote"back\\slash', "tab\tnew\nline", "\x01ctrl"]
    records = []
    for i in range(60):
        step = int(rng.choice([0, 1, 127, 128, 2**31, 2**62, -1, -(2**40), i]))
        wall_ms = int(rng.choice([0, 1, 1_700_000_000_123, 2**45 + 7]))
        count = int(rng.integers(0, 5))
        values = {
            tags[int(rng.integers(len(tags)))] + f"/{k}": float(
                specials[int(rng.integers(len(specials)))]
                if rng.random() < 0.4
                else rng.standard_normal() * 1e3
            )
            for k in range(count)
        }
        records.append(Scalars(step, wall_ms, values))
    return records


@pytest.mark.parametrize("format_class", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("seed", range(5))
def test_the_c_encoder_writes_the_python_encoders_bytes(format_class, seed, monkeypatch) -> None:
    records = _random_records(seed)
    fast, slow = _both(format_class, records, monkeypatch)
    assert fast == slow


@pytest.mark.parametrize("format_class", FORMATS, ids=lambda f: f.name)
def test_scalars_between_other_records_keep_their_order(format_class, monkeypatch) -> None:
    records = [
        Scalars(1, 1000, {"a": 1.0}),
        Text("note", 1, 1000, "x"),
        Scalars(2, 2000, {"a": 2.0, "b": 3.0}),
        Scalars(3, 3000, {"a": 4.0}),
    ]
    fast, slow = _both(format_class, records, monkeypatch)
    assert fast == slow


@pytest.mark.parametrize("format_class", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize(
    "values",
    [{"step": 1.0}, {"wall_time": 2.0}, {"an_int": 3}, {"a_bool": True}],
    ids=["tag-step", "tag-wall_time", "int-value", "bool-value"],
)
def test_what_the_c_encoder_declines_is_encoded_by_the_python_one(format_class, values, monkeypatch) -> None:
    records = [Scalars(1, 1000, {"ok": 0.5}), Scalars(2, 2000, values)]
    fast, slow = _both(format_class, records, monkeypatch)
    assert fast == slow


@pytest.mark.parametrize("format_class", FORMATS, ids=lambda f: f.name)
def test_a_step_beyond_int64_falls_back_to_the_python_encoder(format_class, monkeypatch) -> None:
    records = [Scalars(2**63, 1000, {"a": 1.0})]
    with monkeypatch.context() as patch:
        patch.setattr(_codec, "codec", None)
        try:
            slow = format_class().encode(records)
        except ValueError:  # protobuf refuses it too
            slow = None
    if slow is not None:
        assert format_class().encode(records) == slow


class _Tensorish:
    """A value that float() reads (as a device tensor's scalar) or refuses."""

    def __init__(self, value: float | None) -> None:
        self.value = value

    def __float__(self) -> float:
        if self.value is None:
            raise ValueError("not one number")
        return self.value


def _queue() -> list:
    text = Text("note", 3, 3000, "x")
    return [
        ("a", 1.0, 1, 1.0001), ("b", 2.0, 1, 1.0002), ("a", 3.0, 1, 1.0002),  # a again: new record
        ("c", _Tensorish(4.0), 2, 2.0), ("d", _Tensorish(None), 2, 2.0), text, ("e", 5.0, 2, 2.0),
        (lambda: text), ("f", 6.0, 7, 1e9), ("g", 7.0, -3, 0.0),
    ]  # fmt: skip


def test_the_c_grouping_of_the_queue_is_the_python_one() -> None:
    from dualwatch._writer import _group

    fast_out, fast_bad, fast_last = _codec.codec.group(_queue(), Scalars)
    slow_out, slow_bad, slow_last = _group(_queue())
    assert [o for o in fast_out if not callable(o)] == [o for o in slow_out if not callable(o)]
    assert len(fast_out) == len(slow_out) == 8
    assert [(t, s, str(e)) for t, s, e in fast_bad] == [(t, s, str(e)) for t, s, e in slow_bad]
    assert fast_bad[0][:2] == ("d", 2) and fast_last == slow_last == -3
    assert _codec.codec.group([], Scalars) == ([], [], None) == _group([])


def test_a_wall_time_out_of_range_is_left_to_the_python_grouping() -> None:
    from dualwatch._writer import _group

    for wall in (math.nan, math.inf, 1e30):
        with pytest.raises(_codec.DECLINED):
            _codec.codec.group([("a", 1.0, 0, wall)], Scalars)
    (record,), _, _ = _group([("a", 1.0, 0, 1e30)])  # Python's ints take it
    assert record.wall_ms == int(1e30 * 1000 + 0.5)
    with pytest.raises(ValueError):
        _group([("a", 1.0, 0, math.nan)])  # the writer warns and goes on


def test_grouped_records_stay_out_of_the_cyclic_garbage_collector() -> None:
    """They hold ints and a dict of floats; tracked, each batch's records reach the oldest
    generation and set off full collections (~0.1 s each in a process that imported torch)."""
    import gc

    out, _, _ = _codec.codec.group([("a", 1.0, 0, 1.0), ("a", 2.0, 1, 1.0)], Scalars)
    assert [(r.step, r.wall_ms, r.values) for r in out] == [(0, 1000, {"a": 1.0}), (1, 1000, {"a": 2.0})]
    assert not any(gc.is_tracked(r) or gc.is_tracked(r.values) for r in out)
