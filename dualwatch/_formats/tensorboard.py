"""TensorBoard event files: TFRecord framing ``<Q len | <I masked crc(len) | Event | <I masked crc(Event)``.

Writing: all scalars of one step and millisecond share one ``Event`` (one ``Summary`` with
many values), which every TensorBoard reader accepts. Protobuf messages come from
``tensorboard.compat.proto``; CRC32C from the ``crc32c`` C package (a dependency of the
``tensorboard`` extra), else TensorBoard's own pure-Python one (correct, about 50x slower).

Reading: both checksums are checked (a header seen before is looked up, not re-checksummed).
A record whose data checksum fails is skipped and counted, and reading goes on after it:
TensorBoard's own loader stops there for good, silently. A header whose checksum fails means
the framing is lost: it is counted once and reading resumes at the next offset whose 8 length
bytes carry a valid checksum. A record not yet complete is left for the next poll.

Scalars are ``simple_value`` and scalar tensors of the ``scalars`` plugin (torch
``new_style``, TensorFlow 2; the plugin is named in a tag's first value only, so it is
remembered per tag). ``SessionLog.START`` at step S drops the points at S or later read
so far, as TensorBoard does when a run restarts.
"""

from __future__ import annotations

import io
import math
import re
import struct
from functools import cache
from itertools import repeat
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from dualwatch._formats import _codec, _columns, _graphs
from dualwatch._formats.base import Format, Frame, Points, all_zeros
from dualwatch._images import png_shape
from dualwatch.records import (
    Embedding,
    Graph,
    Histogram,
    HParams,
    Image,
    PRCurve,
    Record,
    ROCCurve,
    Scalars,
    Text,
    binned,
    grouped,
    wall_ms,
)

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_length_at = _LENGTH.unpack_from
_crc_at = _CRC.unpack_from
#: records per parse of the columns message
CHUNK = 512
_SPLIT_BELOW = 32
#: where a header might start: a length below 2 GiB followed by a checksum that is not zero
_CANDIDATE = re.compile(rb"(?=[\x00-\xff]{3}[\x00-\x7f]\x00\x00\x00\x00(?!\x00\x00\x00\x00)[\x00-\xff]{4})")
_START = 1  # SessionLog.START
#: the projector's index of a run's embeddings, beside its event files
PROJECTOR_CONFIG = "projector_config.pbtxt"
#: tensor dtypes that hold a scalar, and how ``tensor_content`` packs them
_CONTENT = {1: "<f", 2: "<d", 3: "<i", 9: "<q", 19: "<e"}
#: wall times (seconds) whose milliseconds every format stores (VisualDL's are an int64)
MAX_WALL_TIME = 9e15


@cache
def crc32c() -> Callable[[bytes], int]:
    """The fastest CRC32C installed."""
    try:
        from crc32c import crc32c as fast
    except ImportError:
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as slow

        return slow
    return fast


def masked(crc: int) -> int:
    """TFRecord's masked checksum."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def header_length(head: bytes, lengths: dict[bytes, int]) -> int | None:
    """The record length in a 12-byte header, or None when its checksum fails; good headers are
    remembered in ``lengths`` (a file repeats a few record sizes)."""
    length = lengths.get(head)
    if length is None and masked(crc32c()(head[:8])) == _crc_at(head, 8)[0]:
        if len(lengths) > 4096:
            lengths.clear()
        length = lengths[head] = _length_at(head)[0]
    return length


def split(
    data: bytes, at: int, limit: int, lengths: dict[bytes, int], skip_bad: bool = True
) -> tuple[list[memoryview], int, int]:
    """The framing: up to ``limit`` payloads from ``at`` whose header and data checksums hold, the
    offset after what was read, and how many records with a failed data checksum were passed over
    (with ``skip_bad=False`` reading stops before the first of them instead).

    Reading stops at a header whose checksum fails and at a record not yet complete.
    """
    view, size, crc, parts, bad = memoryview(data), len(data), crc32c(), [], 0
    add = parts.append
    while at + 12 <= size and len(parts) < limit:
        head = data[at : at + 12]
        length = lengths.get(head)
        if length is None:
            length = header_length(head, lengths)
            if length is None:
                break
        end = at + 12 + length
        if end + 4 > size:
            break
        payload = view[at + 12 : end]
        c = crc(payload)
        if (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF == _crc_at(data, end)[0]:
            add(payload)
        elif skip_bad:
            bad += 1
        else:
            break
        at = end + 4
    return parts, at, bad


def tensor_scalar(tensor: Any) -> float | None:
    """The number in a scalar ``TensorProto``, or None when it holds anything else (a shape of more
    than one element, even one that a single value would fill, is not a scalar)."""
    if _elements(tensor) != 1:
        return None
    if tensor.tensor_content:
        layout = _CONTENT.get(tensor.dtype)
        if layout is None or len(tensor.tensor_content) != struct.calcsize(layout):
            return None
        return float(struct.unpack(layout, tensor.tensor_content)[0])
    for field in (tensor.float_val, tensor.double_val, tensor.int_val, tensor.int64_val):
        if len(field) == 1:
            return float(field[0])
    if len(tensor.half_val) == 1:
        return struct.unpack("<e", struct.pack("<H", tensor.half_val[0] & 0xFFFF))[0]
    return None


def _elements(tensor: Any) -> int | None:
    """The number of elements a tensor's shape claims, or None when a dimension is unknown."""
    dims = [dim.size for dim in tensor.tensor_shape.dim]
    return None if any(d < 0 for d in dims) else math.prod(dims)


#: the ``TensorProto`` fields that hold values one by one (the others hold them packed)
_VALUE_FIELDS = ("half_val", "float_val", "double_val", "int_val", "string_val", "int64_val", "bool_val")


def tensor_array(tensor: Any) -> np.ndarray | None:
    """A ``TensorProto`` as an array, or None when its shape does not match the values it holds.

    TensorFlow fills a shape that claims more elements than are stored by repeating the last
    value, so a 100-byte record claiming 4e9 elements would take 15 GiB: here the elements
    claimed must all be present, which bounds every array by the bytes actually read.
    """
    from tensorboard.util import tensor_util

    n = _elements(tensor)
    if n is None:
        return None
    if tensor.tensor_content:
        layout = _CONTENT.get(tensor.dtype)
        if layout is None or len(tensor.tensor_content) != n * struct.calcsize(layout):
            return None
    elif n > max(len(getattr(tensor, name)) for name in _VALUE_FIELDS):
        return None
    try:
        return tensor_util.make_ndarray(tensor)
    except (TypeError, ValueError):  # a dtype TensorBoard has no array for
        return None


def event_scalars(event: Any, plugins: dict[str, str]) -> tuple[list[tuple[str, float]], int]:
    """``(tag, number)`` of each scalar in a summary event: ``simple_value`` and ``scalars``-plugin
    tensors, and how many ``scalars``-plugin tensors held no single number (damaged). ``plugins``
    remembers each tensor tag's plugin, which only its first value names."""
    out, bad = [], 0
    for value in event.summary.value:
        kind = value.WhichOneof("value")
        if kind == "simple_value":  # the common case first: no metadata is read for it
            out.append((value.tag, value.simple_value))
        elif kind == "tensor":
            if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
                plugins[value.tag] = value.metadata.plugin_data.plugin_name
            if plugins.get(value.tag) == "scalars":
                number = tensor_scalar(value.tensor)
                if number is None:
                    bad += 1
                else:
                    out.append((value.tag, number))
    return out, bad


def event_records(event: Any, plugins: dict[str, str], ms: int) -> Iterator[Record | None]:
    """The histograms, images, text and PR curves of a summary event written at ``ms`` (its scalars
    are :func:`event_scalars`'); None for a value whose data does not make such a record."""
    step = event.step
    for value in event.summary.value:
        tag, kind = value.tag, value.WhichOneof("value")
        if kind == "histo":
            yield _histo(tag, step, ms, value.histo)
        elif kind == "image":
            im = value.image
            yield Image(tag, step, ms, im.encoded_image_string, im.height, im.width, im.colorspace)
        elif kind == "tensor" and plugins.get(tag) in ("pr_curves", "histograms", "images", "text"):
            yield from _tensor_records(tag, step, ms, plugins[tag], tensor_array(value.tensor))


def _tensor_records(
    tag: str, step: int, ms: int, plugin: str, array: np.ndarray | None
) -> list[Record | None]:
    """The records a plugin's tensor holds, or ``[None]`` when its shape or type is not the plugin's."""
    strings = array is not None and array.dtype == object
    if array is None:
        pass
    elif plugin == "pr_curves" and array.ndim == 2 and array.shape[0] == 6 and not strings:
        return [PRCurve(tag, step, ms, *array.astype(np.float64))]  # rows: tp, fp, tn, fn, precision, recall
    elif plugin == "histograms" and array.ndim == 2 and array.shape[1] == 3 and array.size and not strings:
        return [
            binned(tag, step, ms, array[:, 2], np.append(array[:, 0], array[-1, 1]))
        ]  # left, right, count
    elif plugin == "images" and array.ndim == 1 and strings:  # width, height, then the encoded images
        return [Image(tag, step, ms, png, *png_shape(png)) for png in array[2:]]
    elif plugin == "text" and strings:
        return [Text(tag, step, ms, "\n".join(item.decode("utf-8", "replace") for item in array.reshape(-1)))]
    return [None]


def _histo(tag: str, step: int, ms: int, histo: Any) -> Histogram | None:
    """A legacy ``HistogramProto`` (bucket ``i`` ends at ``bucket_limit[i]``) as a record, or None
    when it has not one limit per bucket.

    The first bucket starts at the minimum; limits beyond the data (TensorFlow's last one is
    DBL_MAX) are clipped to the minimum and maximum, which VisualDL draws as the x range.
    """
    limits = list(histo.bucket_limit)
    if len(limits) != len(histo.bucket):
        return None
    edges = np.array([min(histo.min, limits[0]) if limits else histo.min, *limits], dtype=np.float64)
    if histo.num > 0:
        edges = np.clip(edges, histo.min, histo.max)
    counts = np.array(histo.bucket, dtype=np.float64)
    return Histogram(tag, step, ms, counts, edges, int(histo.num), histo.sum, histo.sum_squares)


def _is_start(event: Any) -> bool:
    return event.WhichOneof("what") == "session_log" and event.session_log.status == _START


def _path_part(tag: str) -> str:
    """A tag as one directory name, escaped as torch's ``SummaryWriter`` escapes it."""
    return tag.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


def _labels_tsv(rows: list[list[str]], header: list[str] | None) -> bytes:
    """The projector's ``metadata.tsv``: one line per point; a header line only with two columns or
    more (the projector reads the first line as a header only when it holds a tab)."""
    lines = [header, *rows] if header and len(header) > 1 else rows
    clean = str.maketrans("\t\r\n", "   ")
    return "".join("\t".join(cell.translate(clean) for cell in line) + "\n" for line in lines).encode("utf-8")


class TensorBoardDecoder:
    """Turns one file's bytes into points; holds the file's resync state."""

    def __init__(self, points: Points) -> None:
        self.points = points
        self._columns = _columns.columns()[1].FromString
        self._event = _columns.tensorboard_event().FromString
        self._lengths: dict[bytes, int] = {}
        self._plugins: dict[str, str] = {}
        self._lost = False

    def decode(self, data: bytes) -> int:
        """Reads the whole records at the start of ``data``; returns how many bytes are done with."""
        at, size = 0, len(data)
        while True:
            parts, at, bad = split(data, at, CHUNK, self._lengths)
            self.points.corrupt += bad
            if parts:
                self._emit(parts, 0, len(parts))
            if len(parts) == CHUNK:
                continue
            if at + 12 > size or header_length(data[at : at + 12], self._lengths) is not None:
                return at  # a record still being written
            if all_zeros(data, at):
                return at  # zeros a crash left: wait for what comes after them
            at = self._damaged(data, at)
            if at + 12 > size:
                return at

    def skip(self, data: bytes, available: int) -> int:
        """Passes over what ``decode`` waited on at the start of ``data`` when that is more than a
        reader holds (``data``, of the ``available`` bytes left in the file): a record whose header
        checksum holds is passed over unread once it is all there (0 until then: no scalar event is
        that big), and a zero-filled stretch is counted once as damage."""
        length = header_length(data[:12], self._lengths)
        if length is not None:
            return 16 + length if 16 + length <= available else 0
        if not self._lost:
            self.points.corrupt += 1
            self._lost = True
        return max(1, len(data) - 11)  # a header may start in the last 11 bytes

    def _damaged(self, data: bytes, at: int) -> int:
        """Counts a bad header (once per stretch); returns the next offset with a good one."""
        if not self._lost:
            self.points.corrupt += 1
            self._lost = True
        size = len(data)
        for match in _CANDIDATE.finditer(data, at + 1):
            start = match.start()
            if header_length(data[start : start + 12], self._lengths) is not None:
                return start
        return max(at + 1, size - 11)

    def _emit(self, parts: list[memoryview], lo: int, hi: int) -> None:
        """Adds the points of the events ``parts[lo:hi]``, whose checksums are good."""
        k = hi - lo
        self._lost = False
        try:
            events = self._columns(b"".join(parts[lo:hi]))
        except Exception:
            self._one_by_one(parts[lo:hi])
            return
        values = events.summary.value
        tags, steps, walls, numbers = values.tag, events.step, events.wall_time, values.simple_value
        whole = min(len(tags), len(steps), len(walls), len(numbers))
        plain = len(events.ListFields()) == 3 and len(values.ListFields()) == 2
        if whole == k == len(tags) and plain:
            self.points.extend(list(tags), list(steps), list(walls), list(numbers))
        elif k >= _SPLIT_BELOW and len(tags) <= k and (k - whole) * 8 < k:
            self._emit(parts, lo, lo + k // 2)
            self._emit(parts, lo + k // 2, hi)
        else:
            self._one_by_one(parts[lo:hi])

    def _one_by_one(self, parts: list[memoryview]) -> None:
        """The exact path: TensorBoard's own ``Event``, tensor scalars and purges included."""
        tags: list[str] = []
        steps: list[int] = []
        walls: list[float] = []
        numbers: list[float] = []
        for part in parts:
            try:
                event = self._event(part)
            except Exception:
                self.points.corrupt += 1
                continue
            if event.HasField("summary"):
                step, wall = event.step, event.wall_time  # one object for all values of the event
                points, bad = event_scalars(event, self._plugins)
                self.points.corrupt += bad
                for tag, number in points:
                    tags.append(tag)
                    steps.append(step)
                    walls.append(wall)
                    numbers.append(number)
            elif _is_start(event):
                self.points.extend(tags, steps, walls, numbers)
                tags, steps, walls, numbers = [], [], [], []
                self.points.purge(event.step)
        self.points.extend(tags, steps, walls, numbers)


class TensorBoardFormat(Format):
    name = "tensorboard"
    label = "TensorBoard"
    mark = "tfevents"
    file_pattern = "events.out.tfevents.{sec:010d}.{host}.{pid}.{seq:09d}.dualwatch"  # sorts by age
    Decoder = TensorBoardDecoder
    resumes_in_new_file = True

    def __init__(self) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        self._event_pb2 = event_pb2
        self._summary_pb2 = summary_pb2
        self._crc = crc32c()

    def header(self, wall_ms: int, step: int) -> bytes:
        """The file version, then ``SessionLog.START`` at the file's first step: the purge marker.

        TensorBoard drops points of this run written before it at ``step`` or later. Every file
        carries one because TensorBoard's Python loader ignores the first START of a run.
        """
        version = self._event_pb2.Event(wall_time=wall_ms / 1000, file_version="brain.Event:2")
        log = self._event_pb2.SessionLog(status=self._event_pb2.SessionLog.START)
        start = self._event_pb2.Event(wall_time=wall_ms / 1000, step=step, session_log=log)
        return self._frame(version) + self._frame(start)

    def encode(self, records: Sequence[Record]) -> bytes:
        return _codec.encode(records, _codec.codec and _codec.codec.tensorboard, self._encode)

    def _encode(self, records: Sequence[Record]) -> bytes:
        out: list[bytes] = []
        for record in records:
            event = self._event_pb2.Event(wall_time=record.wall_ms / 1000, step=record.step)
            values = event.summary.value
            if type(record) is Scalars:
                for tag, number in record.values.items():
                    value = values.add()
                    value.tag = tag
                    value.simple_value = number
            elif isinstance(record, HParams):
                out.extend(self._frame(e) for e in self._hparams(record))
                continue
            elif isinstance(record, Graph):  # torch's GraphDef as it made it, else built from the nodes
                graph = record.native.get(self.name) or _graphs.graph_def(record)
                out.append(
                    self._frame(self._event_pb2.Event(wall_time=record.wall_ms / 1000, graph_def=graph))
                )
            elif isinstance(record, (ROCCurve, Embedding)):  # no ROC plugin; embeddings: side_files
                continue
            else:
                values.append(self._value(record))
            out.append(self._frame(event))
        return b"".join(out)

    def _value(self, record: Record) -> Any:
        pb = self._summary_pb2
        if isinstance(record, Histogram):
            finite = record.num > 0
            histo = pb.HistogramProto(
                min=float(record.edges[0]) if finite else 0.0,
                max=float(record.edges[-1]) if finite else 0.0,
                num=record.num,
                sum=record.sum,
                sum_squares=record.sum_squares,
                bucket_limit=record.edges[1:].tolist(),
                bucket=record.counts.tolist(),
            )
            return pb.Summary.Value(tag=record.tag, histo=histo)
        if isinstance(record, Image):
            image = pb.Summary.Image(
                height=record.height,
                width=record.width,
                colorspace=record.channels,
                encoded_image_string=record.png,
            )
            return pb.Summary.Value(tag=record.tag, image=image)
        if isinstance(record, Text):
            from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

            tensor = tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING,
                string_val=[record.text.encode("utf-8")],
                tensor_shape=tensor_shape_pb2.TensorShapeProto(),
            )
            metadata = pb.SummaryMetadata(plugin_data=pb.SummaryMetadata.PluginData(plugin_name="text"))
            return pb.Summary.Value(tag=record.tag, metadata=metadata, tensor=tensor)
        if isinstance(record, PRCurve):
            return self._pr_curve(record)
        raise TypeError(f"TensorBoard cannot store {type(record).__name__}")

    # -- curves and embeddings -------------------------------------------------------------------

    def _pr_curve(self, record: PRCurve) -> Any:
        """The ``pr_curves`` plugin's summary: a [6, num_thresholds] float32 tensor of tp, fp, tn, fn,
        precision and recall, with the plugin's metadata in every value (as torch writes it)."""
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.plugins.pr_curve import metadata

        rows = (record.tp, record.fp, record.tn, record.fn, record.precision, record.recall)
        data = np.stack(rows).astype("<f4")
        dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in data.shape]
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims),
            tensor_content=data.tobytes(),
        )
        meta = metadata.create_summary_metadata(record.tag, "", data.shape[1])
        return self._summary_pb2.Summary.Value(tag=record.tag, metadata=meta, tensor=tensor)

    def side_files(
        self, records: Sequence[Record], read: Callable[[str], bytes | None]
    ) -> list[tuple[str, bytes]]:
        """Embeddings for the projector, laid out as torch's ``add_embedding`` lays them out:
        ``<step:05d>/<tag>/tensors.tsv`` (+ ``metadata.tsv``, ``sprite.png``), each listed in the
        run's ``projector_config.pbtxt``, which keeps the embeddings written before (one per tag
        and step: a later one replaces it)."""
        embeddings = [record for record in records if type(record) is Embedding]
        if not embeddings:
            return []
        from google.protobuf import text_format
        from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

        config = ProjectorConfig()
        text_format.Parse((read(PROJECTOR_CONFIG) or b"").decode("utf-8"), config)
        files = []
        for record in embeddings:
            folder = f"{record.step:05d}/{_path_part(record.tag)}"
            name = f"{record.tag}:{record.step:05d}"
            kept = [info for info in config.embeddings if info.tensor_name != name]
            del config.embeddings[:]
            config.embeddings.extend(kept)
            info = config.embeddings.add(tensor_name=name, tensor_path=f"{folder}/tensors.tsv")
            info.tensor_shape.extend(record.mat.shape)
            buffer = io.BytesIO()
            np.savetxt(buffer, record.mat, fmt="%.9g", delimiter="\t")  # 9 digits: float32 exactly
            files.append((info.tensor_path, buffer.getvalue()))
            if record.metadata is not None:
                info.metadata_path = f"{folder}/metadata.tsv"
                files.append((info.metadata_path, _labels_tsv(record.metadata, record.header)))
            if record.sprite is not None:
                info.sprite.image_path = f"{folder}/sprite.png"
                info.sprite.single_image_dim.extend(record.sprite_size)
                files.append((info.sprite.image_path, record.sprite))
        files.append((PROJECTOR_CONFIG, text_format.MessageToString(config).encode("utf-8")))
        return files

    def _hparams(self, record: HParams) -> Iterator[Any]:
        """The hparams plugin's experiment, session-start and session-end summaries, in this run."""
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        start = plugin_data_pb2.SessionStartInfo(start_time_secs=record.wall_ms / 1000)
        infos = []
        for name, value in record.hparams.items():
            if isinstance(value, bool):
                start.hparams[name].bool_value = value
                kind = "DATA_TYPE_BOOL"
            elif isinstance(value, (int, float)):
                start.hparams[name].number_value = value
                kind = "DATA_TYPE_FLOAT64"
            else:
                start.hparams[name].string_value = str(value)
                kind = "DATA_TYPE_STRING"
            infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DataType.Value(kind)))
        experiment = api_pb2.Experiment(
            hparam_infos=infos,
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in record.metrics],
        )
        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value("STATUS_SUCCESS"))
        for tag, data in (
            (metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
            (metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
            (metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)),
        ):
            data.version = metadata.PLUGIN_DATA_VERSION
            value = self._summary_pb2.Summary.Value(
                tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR
            )
            yield self._event_pb2.Event(
                wall_time=record.wall_ms / 1000,
                step=record.step,
                summary=self._summary_pb2.Summary(value=[value]),
            )

    def _frame(self, event: Any) -> bytes:
        data = event.SerializeToString()
        header = _LENGTH.pack(len(data))
        crc = self._crc
        return b"".join((header, _CRC.pack(masked(crc(header))), data, _CRC.pack(masked(crc(data)))))

    @classmethod
    def scan(cls, data: bytes) -> list[Frame]:
        frames, at, lengths, parse = [], 0, {}, _columns.tensorboard_event().FromString
        while True:
            parts, end, _ = split(data, at, 1, lengths, skip_bad=False)
            if not parts:
                return frames
            event = parse(parts[0])
            frames.append(Frame(at, end, event.step if event.HasField("summary") else None))
            at = end

    @classmethod
    def read_records(cls, data: bytes) -> Iterator[Record | int | None]:
        parse = _columns.tensorboard_event().FromString
        plugins: dict[str, str] = {}
        for frame in cls.scan(data):
            event = parse(data[frame.start + 12 : frame.end - 4])
            if _is_start(event):
                yield event.step
            elif event.HasField("summary"):
                points, bad = event_scalars(event, plugins)  # first: it learns the tags' plugins
                yield from repeat(None, bad)
                if not abs(event.wall_time) < MAX_WALL_TIME:  # NaN, or no int64 millisecond
                    yield None
                    continue
                yield from event_records(event, plugins, wall_ms(event.wall_time))
                yield from grouped((tag, number, event.step, event.wall_time) for tag, number in points)
