"""Model graphs: ``Writer.add_graph`` and ``Watcher(graph=)``, for torch and paddle models, in both viewers.

The real ``visualdl`` and ``tensorboard`` servers (``_servers.py``) are asked over HTTP for each
run's graph and must list the model's layers:

* TensorBoard: ``/data/plugin/graphs/graph?run=<run>&conceptual=false`` (the graphs plugin's
  ``graph_route``) answers the run's GraphDef as protobuf text.
* VisualDL 2.5: ``/app/api/graph_runs`` (runs by directory path) and
  ``/app/api/graph/get_all_nodes?run=<run>`` (``api.py`` ``graph_get_all_nodes``): every node,
  the layers (``is_leaf`` false, ``type`` the layer's class) and the operations inside them.
"""

from __future__ import annotations

import json
import os
import urllib.request
import warnings
from typing import Any, Iterator

import numpy as np
import pytest
from _servers import Server, _eventually, _vdl_run, both_servers
from conftest import _import

from dualwatch._formats.base import Format
from dualwatch._formats.tensorboard import TensorBoardFormat
from dualwatch._formats.visualdl import VisualDLFormat
from dualwatch._watcher import Watcher
from dualwatch._writer import Writer
from dualwatch.records import Scalars

#: the layer classes each framework's model is built of, as its viewer names them
LAYERS = {"torch": {"Conv2d", "Linear"}, "paddle": {"Conv2D", "Linear"}}


def _model(framework: str, dict_output: bool = False) -> Any:
    """A small convolutional model (``conv``, ``fc``); ``dict_output`` returns ``{"y": ...}``, which
    torch's strict trace refuses."""
    fw = _import(framework)
    nn = fw.nn
    base = nn.Module if framework == "torch" else nn.Layer
    conv = nn.Conv2d if framework == "torch" else nn.Conv2D

    class Net(base):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv(1, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 3)

        def forward(self, x: Any) -> Any:
            y = self.fc(fw.flatten(nn.functional.relu(self.conv(x)), 1))
            return {"y": y} if dict_output else y

    return Net()


def _example(framework: str, shape: tuple[int, ...] = (2, 1, 8, 8)) -> Any:
    fw = _import(framework)
    if framework == "torch":
        return fw.zeros(shape)
    return [fw.static.InputSpec([-1, *shape[1:]], "float32")]


def _graph_events(run_dir: str) -> list[Any]:
    """The ``graph_def`` events of the run's TensorBoard files."""
    from tensorboard.compat.proto import event_pb2

    events = []
    for name in sorted(os.listdir(run_dir)):
        if TensorBoardFormat.is_log(name):
            with open(os.path.join(run_dir, name), "rb") as f:
                data = f.read()
            for frame in TensorBoardFormat.scan(data):
                event = event_pb2.Event.FromString(data[frame.start + 12 : frame.end - 4])
                if event.HasField("graph_def"):
                    events.append(event)
    return events


def _jsonl(run_dir: str) -> list[dict[str, Any]]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _vdlgraphs(run_dir: str) -> list[str]:
    return [name for name in os.listdir(run_dir) if "vdlgraph" in name]


def _dualwatch_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("dualwatch:")]


# -- both viewers, over HTTP --------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Server, Server]]:
    """Both servers on a logdir with one run per framework, each holding its model's graph."""
    root = tmp_path_factory.mktemp("graphs")
    logdir = str(root / "logs")
    for framework in LAYERS:
        with Writer(logdir, framework) as writer:
            writer.add_graph(_model(framework), _example(framework))
            writer.add_scalar("loss", 1.0, 0)
    with both_servers(logdir, str(root), 0.5, 1) as (vdl, tb):
        yield logdir, vdl, tb


@pytest.mark.parametrize("framework", list(LAYERS))
def test_a_models_layers_are_listed_by_both_viewers(
    served: tuple[str, Server, Server], framework: str
) -> None:
    from google.protobuf import text_format
    from tensorboard.compat.proto import graph_pb2

    logdir, vdl, tb = served

    def tensorboard_layers() -> set[str]:
        url = f"{tb.base}/data/plugin/graphs/graph?run={framework}&conceptual=false"
        with urllib.request.urlopen(url, timeout=10) as response:
            graph = text_format.Parse(response.read().decode("utf-8"), graph_pb2.GraphDef())
        return {part.split("[")[0] for node in graph.node for part in node.name.split("/")[:-1]}

    def visualdl_layers() -> set[str]:
        run = _vdl_run(vdl, logdir, framework)
        assert run in vdl.vdl("graph_runs")
        nodes = vdl.vdl("graph/get_all_nodes", run=run)["nodes"]
        return {node["type"] for node in nodes if not node["is_leaf"]}

    assert LAYERS[framework] <= _eventually(tensorboard_layers, 30, "TensorBoard's graph", tb)
    assert LAYERS[framework] <= _eventually(visualdl_layers, 30, "VisualDL's graph", vdl)


# -- on disk --------------------------------------------------------------------------------------


def test_each_format_holds_the_graph_once(tmp_path: os.PathLike[str], framework: str) -> None:
    with Writer(str(tmp_path), "run") as writer:
        writer.add_graph(_model(framework), _example(framework))
    run_dir = os.path.join(tmp_path, "run")
    (event,) = _graph_events(run_dir)
    assert {node.op for node in _graph_def(event).node} >= (
        {"aten::linear"} if framework == "torch" else {"conv2d"}
    )
    (name,) = _vdlgraphs(run_dir)
    with open(os.path.join(run_dir, name)) as f:
        graph = json.load(f)
    assert LAYERS[framework] <= {node["type"] for node in graph["nodes"] if not node["is_leaf_node"]}
    (line,) = _jsonl(run_dir)
    assert line["kind"] == "graph" and line["framework"] == framework and line["nodes"] > 3


def _graph_def(event: Any) -> Any:
    from tensorboard.compat.proto import graph_pb2

    return graph_pb2.GraphDef.FromString(event.graph_def)


def test_an_untraceable_model_warns_once_logs_no_graph_and_the_run_goes_on(
    tmp_path: os.PathLike[str], framework: str
) -> None:
    """torch: a dict output, which the strict trace refuses; paddle: an input_spec of the wrong
    width, which fails in ``jit.save``'s conversion."""
    if framework == "torch":
        model, example = _model("torch", dict_output=True), _example("torch")
    else:
        model, example = _model("paddle"), _example("paddle", (2, 1, 9, 9))
    with Writer(str(tmp_path), "run") as writer, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer.add_graph(model, example)
        writer.add_scalar("loss", 0.5, 1)
    (message,) = _dualwatch_warnings(caught)
    assert "graph of Net is not logged" in message and "training goes on" in message.lower()
    run_dir = os.path.join(tmp_path, "run")
    assert _graph_events(run_dir) == [] and _vdlgraphs(run_dir) == []
    assert [line.get("loss") for line in _jsonl(run_dir)] == [0.5]


def test_tracing_a_paddle_model_leaves_it_as_it_was(tmp_path: os.PathLike[str]) -> None:
    """VisualDL's own exporter would leave hooks, new layer names and a static ``forward`` behind."""
    paddle = _import("paddle")
    model = _model("paddle")
    x = paddle.randn([2, 1, 8, 8])
    before = model(x).numpy()
    names = [layer.full_name() for layer in model.sublayers(include_self=True)]
    with Writer(str(tmp_path), "run") as writer:
        writer.add_graph(model, input_spec=_example("paddle"))
    assert "forward" not in vars(model)
    assert [layer.full_name() for layer in model.sublayers(include_self=True)] == names
    assert not any(layer._forward_pre_hooks or layer._forward_post_hooks for layer in model.sublayers(True))
    np.testing.assert_array_equal(model(x).numpy(), before)


def test_what_is_not_a_model_or_an_example_raises_a_type_error_naming_the_forms(
    tmp_path: os.PathLike[str], framework: str
) -> None:
    model = _model(framework)
    with Writer(str(tmp_path), "run") as writer:
        with pytest.raises(TypeError, match=r"torch\.nn\.Module or a paddle\.nn\.Layer"):
            writer.add_graph(model.state_dict(), _example(framework))
        expected = (
            r"a tensor, or a tuple of tensors"
            if framework == "torch"
            else r"list of paddle\.static\.InputSpec"
        )
        with pytest.raises(TypeError, match=expected):
            writer.add_graph(model, "x")
        with pytest.raises(TypeError, match="not both"):
            writer.add_graph(model, _example(framework), input_spec=_example(framework))


@pytest.mark.filterwarnings("ignore:dualwatch. gradients are")  # the toy loss's gradients are large
def test_watcher_logs_the_graph_once_when_it_is_made(tmp_path: os.PathLike[str], framework: str) -> None:
    fw = _import(framework)
    model = _model(framework)
    x = fw.zeros([2, 1, 8, 8])
    with Watcher(
        model, every=1, logdir=str(tmp_path), run="run", console=False, graph=_example(framework)
    ) as w:
        for step in range(3):
            model(x).sum().backward()
            w.step(step)
    run_dir = os.path.join(tmp_path, "run")
    assert len(_graph_events(run_dir)) == 1 and len(_vdlgraphs(run_dir)) == 1
    lines = _jsonl(run_dir)
    assert [line["kind"] for line in lines if "kind" in line] == ["graph"]
    assert sorted({line["step"] for line in lines if "kind" not in line}) == [0, 1, 2]


def test_a_resumed_run_keeps_its_steps_when_the_graph_is_logged_first(
    tmp_path: os.PathLike[str], framework: str
) -> None:
    """A graph has no step: it must not be taken for the step a resumed run continues from."""
    with Writer(str(tmp_path), "run") as writer:
        for step in range(3):
            writer.add_scalar("loss", float(step), step)
    with Writer(str(tmp_path), "run", resume=True) as writer:
        writer.add_graph(_model(framework), _example(framework))
        writer.flush()
        writer.add_scalar("loss", 3.0, 3)
    run_dir = os.path.join(tmp_path, "run")
    assert _loss_steps(run_dir, TensorBoardFormat) == [0, 1, 2, 3]
    assert _loss_steps(run_dir, VisualDLFormat) == [0, 1, 2, 3]
    assert [line["step"] for line in _jsonl(run_dir) if "loss" in line] == [0, 1, 2, 3]


def _loss_steps(run_dir: str, fmt: type[Format]) -> list[int]:
    """The steps of ``loss`` as the viewer sees them: every file in order, a purge marker dropping
    the steps at or after it (TensorBoard), or the newest file alone (VisualDL)."""
    names = sorted(name for name in os.listdir(run_dir) if fmt.is_log(name))
    steps: list[int] = []
    for name in names if fmt.resumes_in_new_file else names[-1:]:
        with open(os.path.join(run_dir, name), "rb") as f:
            for record in fmt.read_records(f.read()):
                if isinstance(record, int):
                    steps = [step for step in steps if step < record]
                elif isinstance(record, Scalars) and "loss" in record.values:
                    steps.append(record.step)
    return steps


def test_a_resumed_run_that_logs_only_a_graph_keeps_every_step(tmp_path: os.PathLike[str]) -> None:
    with Writer(str(tmp_path), "run") as writer:
        for step in range(3):
            writer.add_scalar("loss", float(step), step)
    with Writer(str(tmp_path), "run", resume=True) as writer:
        writer.add_graph(_model("torch"), _example("torch"))
    run_dir = os.path.join(tmp_path, "run")
    assert len(_graph_events(run_dir)) == 1 and len(_vdlgraphs(run_dir)) == 1
    assert _loss_steps(run_dir, TensorBoardFormat) == _loss_steps(run_dir, VisualDLFormat) == [0, 1, 2]
