"""TensorBoard event files: TFRecord framing (length, masked CRC32C, Event, masked CRC32C).

All scalars of one step and millisecond share one ``Event`` (one ``Summary`` with many
values), which every TensorBoard reader accepts. Protobuf messages come from
``tensorboard.compat.proto``; CRC32C from the ``crc32c`` C package (a dependency of the
``tensorboard`` extra), else TensorBoard's own pure-Python one.
"""

from __future__ import annotations

import struct
from typing import Sequence

from dualwatch.formats import Format, Frame
from dualwatch.records import Histogram, HParams, Image, Record, Scalars, Text

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


def _masked_crc():
    """``masked_crc32c(data) -> int`` from the fastest implementation installed."""
    try:
        from crc32c import crc32c
    except ImportError:
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

        return masked_crc32c

    def masked_crc32c(data: bytes) -> int:
        crc = crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    return masked_crc32c


class TensorBoardFormat(Format):
    name = "tensorboard"
    label = "TensorBoard"
    mark = "tfevents"
    file_pattern = "events.out.tfevents.{sec:010d}.{host}.{pid}.{seq}.dualwatch"

    def __init__(self) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        self._event_pb2 = event_pb2
        self._summary_pb2 = summary_pb2
        self._crc = _masked_crc()

    resumes_in_new_file = True

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
            else:
                values.append(self._value(record))
            out.append(self._frame(event))
        return b"".join(out)

    def _value(self, record: Record):
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
        raise TypeError(f"TensorBoard cannot store {type(record).__name__}")

    def _hparams(self, record: HParams):
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

    def _frame(self, event) -> bytes:
        data = event.SerializeToString()
        header = _LENGTH.pack(len(data))
        return b"".join((header, _CRC.pack(self._crc(header)), data, _CRC.pack(self._crc(data))))

    def scan(self, data: bytes) -> list[Frame]:
        frames, at, size, crc = [], 0, len(data), self._crc
        parse = self._event_pb2.Event.FromString
        while at + 12 <= size:
            header = data[at : at + 8]
            if _CRC.unpack_from(data, at + 8)[0] != crc(header):
                break
            end = at + 12 + _LENGTH.unpack(header)[0] + 4
            payload = data[at + 12 : end - 4]
            if end > size or _CRC.unpack_from(data, end - 4)[0] != crc(payload):
                break
            event = parse(payload)
            frames.append(Frame(at, end, event.step if event.HasField("summary") else None))
            at = end
        return frames
