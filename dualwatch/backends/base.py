"""What dualwatch needs from a framework, in two classes: its tensors, and one model's parameters.

A framework is one module of this package (``torch.py``, ``paddle.py``) and the only place
that knows it. The module holds:

* a :class:`Framework`, one per process: it recognises the framework's tensors and models and
  spells, once, the few tensor operations the rest of dualwatch needs (host copies and views for
  activation capture and edge maps, device histograms, one-element tensors for the writer,
  native files);
* a :class:`Backend`, one per watched model: it lists the model's parameters and reduces
  tensors on their own device, one at a time, and (where the framework gives
  :meth:`Backend.batch_key`) many at once with a fixed number of ops (see
  :mod:`dualwatch._device`). Which tensors are reduced how, the weight snapshots and the one
  device-to-host transfer of a check are the :class:`~dualwatch._reducer.Reducer`'s business,
  the same for every framework.

Only the methods marked abstract are needed to watch a model and write its histograms and
images; the others serve activation capture and edge maps and raise until a framework gives
them. A framework outside this package registers its pair with
:func:`dualwatch.backends.register`; nothing else in dualwatch changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, BinaryIO, Callable, Hashable

import numpy as np

from dualwatch._device import Layout
from dualwatch._table import ParamInfo
from dualwatch.records import GraphNode


class Framework(ABC):
    """One framework's tensors as dualwatch uses them. ``name`` is what users call it (``"torch"``)."""

    name: str = ""
    #: file extensions of :meth:`save`'s files, the one dualwatch writes first (``(".pt", ".pth")``)
    native_extensions: tuple[str, ...] = ()

    # -- recognising tensors and models -------------------------------------------------------
    @abstractmethod
    def is_tensor(self, x: Any) -> bool:
        """Whether ``x`` is one of this framework's tensors."""

    @abstractmethod
    def is_model(self, obj: Any) -> bool:
        """Whether ``obj`` is one of this framework's models (``nn.Module``, ``nn.Layer``)."""

    @abstractmethod
    def backend(self, model: Any) -> Backend:
        """The :class:`Backend` of ``model``, looking through wrappers (DataParallel, compile)."""

    def process_rank(self) -> int | None:
        """This process's global rank in the framework's initialised process group, else None."""
        return None

    def rank_meeting(self) -> RankMeeting | None:
        """A place where every rank of a multi-process job can meet at the end without a collective
        (:class:`RankMeeting`); None when this process is in no such job, or the framework has none."""
        return None

    def cuda_device_count(self) -> int:
        """How many CUDA devices the framework sees (0 when it was built without CUDA)."""
        return 0

    def compiling(self) -> bool:
        """Whether the running forward pass is traced by a compiler (its hooks see symbolic values,
        and hooks added later never run): activation capture keeps its hooks on such a model."""
        return False

    # -- tensors: what watching, histograms, images and the writer need --------------------------
    @abstractmethod
    def on_host(self, x: Any) -> bool:
        """Whether ``x`` lives in host memory (else on an accelerator)."""

    @abstractmethod
    def to_numpy(self, x: Any) -> np.ndarray:
        """``x``'s values, detached, in host memory (no copy where the framework allows one);
        bfloat16, which numpy lacks, widened to float32."""

    def scalar(self, x: Any) -> Any:
        """The number in a one-element tensor, or, on an accelerator, a detached copy of it that the
        writer reads (``float()``) on its own thread, so the training thread never waits for the device."""
        return self.to_numpy(x).item()

    def device_histogram(self, x: Any, bins: int) -> Any | None:
        """``[lo, hi, num, sum, sum_squares, nonfinite, counts...]`` of an accelerator tensor, counted
        on its device without waiting for it (see :mod:`dualwatch._histogram`); None counts on the host."""
        return None

    # -- model graphs (Writer.add_graph) ---------------------------------------------------------
    def graph_example(self, example: Any) -> Any:
        """``example`` (the input ``add_graph`` was given) as :meth:`graph` takes it; a ``TypeError``
        that names the forms this framework accepts when it is none of them."""
        raise _lacking(self, "graph_example", "model graphs")

    def graph(
        self, model: Any, example: Any, verbose: bool, strict: bool
    ) -> tuple[list[GraphNode], dict[str, bytes]]:
        """Traces ``model``, as it is now, on ``example`` (from :meth:`graph_example`): its nodes and,
        by format name, what a viewer's own tools made of it (see :class:`dualwatch.records.Graph`).

        Any exception means the model could not be traced; ``model`` is left as it was.
        """
        raise _lacking(self, "graph", "model graphs")

    # -- tensors: activation capture -----------------------------------------------------------
    def host_copy(self, x: Any) -> Any:
        """A detached tensor in host memory with storage of its own (never an alias of ``x``)."""
        raise _lacking(self, "host_copy", "activation capture")

    def nbytes(self, x: Any) -> int:
        return int(self.to_numpy(x).nbytes)

    def dtype_name(self, x: Any) -> str:
        """``"float32"``, ``"bfloat16"``...: the dtype without the framework's prefix."""
        return str(x.dtype).rsplit(".", 1)[-1]

    def save(self, obj: Any, path: str | BinaryIO) -> None:
        """Writes ``obj`` (tensors, nested in lists and dicts) with the framework's own serialiser, to
        a file name or an ``io.BytesIO`` (capture files are written through a buffer, so that they are
        created without following links)."""
        raise _lacking(self, "save", "native capture files")

    # -- tensors: edge maps --------------------------------------------------------------------
    def is_float(self, x: Any) -> bool:
        return bool(np.issubdtype(self.to_numpy(x).dtype, np.floating))

    def host_float(self, x: Any) -> Any:
        """``x`` if it is float32 or float64 (numpy's and OpenCV's types), else ``x`` as float32."""
        raise _lacking(self, "host_float", "edge maps")

    def host_view(self, x: Any) -> np.ndarray:
        """A numpy array of ``x``'s values: a zero-copy view of host memory, a copy from an accelerator."""
        return self.to_numpy(x)

    def to_uint8(self, x: Any) -> Any:
        raise _lacking(self, "to_uint8", "edge maps")

    def from_numpy(self, array: np.ndarray, like: Any) -> Any:
        """A tensor of ``array``'s values on ``like``'s device, in ``like``'s dtype."""
        raise _lacking(self, "from_numpy", "edge maps")


class RankMeeting(ABC):
    """Every rank of a job announces itself when it makes a Watcher, and meets the others when it
    closes it, through the job's key-value store: no collective, so a rank that does not come
    can neither mismatch nor deadlock the job's own collectives; it only costs the others a
    bounded wait."""

    @abstractmethod
    def meet(self, timeout_s: float) -> str | None:
        """Wait (at most ``timeout_s``) until every rank that announced itself comes here; None when
        all came, or when not every rank announced itself (none would come), else what went wrong."""


class Backend(ABC):
    """One model's parameters, and the reductions of one tensor on its own device.

    ``weight`` and ``grad`` return the framework's tensors (anything with a ``shape``);
    ``full_stats`` and ``light_stats`` return device scalars (or host numbers), which the reducer
    gathers and hands to ``to_host`` once per check. Reductions accumulate in at least float32.
    """

    def __init__(self, model: Any, framework: Framework) -> None:
        self.model = model
        self.framework = framework

    @abstractmethod
    def parameters(self) -> list[tuple[str, Any]]:
        """``(name, parameter)`` in model order, frozen ones included, buffers excluded."""

    @abstractmethod
    def module_names(self) -> list[str]:
        """Names of every submodule (the root is ``""``)."""

    @abstractmethod
    def info(self, name: str, param: Any) -> ParamInfo:
        """Static description of one parameter."""

    @abstractmethod
    def weight(self, param: Any) -> Any:
        """The parameter's data (this rank's part of a split one) as a detached tensor, not a copy."""

    @abstractmethod
    def grad(self, param: Any) -> Any | None:
        """The parameter's final gradient (this rank's part), or None when it has none."""

    @abstractmethod
    def host_array(self, x: Any) -> np.ndarray | None:
        """A zero-copy numpy view of ``x`` (float32 or float64) when it lives in host memory, else None."""

    @abstractmethod
    def full_stats(self, x: Any, prev: Any | None, count_nonfinite: bool) -> dict[str, Any]:
        """Device scalars for one tensor.

        Keys: ``sum``, ``sumsq``, ``m2``, ``min``, ``max``, plus ``absdiff`` (sum |x - prev|)
        when ``prev`` is given and ``nonfinite`` when ``count_nonfinite``.
        """

    @abstractmethod
    def light_stats(self, x: Any) -> dict[str, Any]:
        """Device scalars ``sumsq``, ``min``, ``max`` for one tensor."""

    @abstractmethod
    def snapshot(self, x: Any, prev: Any | None) -> Any:
        """Copy ``x`` into ``prev`` (allocating it when None) and return it."""

    @abstractmethod
    def count_nonfinite(self, x: Any) -> int:
        """NaN/Inf count of one tensor (only called after such values were seen)."""

    @abstractmethod
    def counts_on_device(self, x: Any) -> bool:
        """True where counting non-finite values in the main pass is cheaper than a recount.

        On an accelerator the count rides along in the single transfer; on the CPU a recount
        reads host memory directly, so it is done only for the rare tensors whose min/max/sum
        show a NaN or Inf.
        """

    @abstractmethod
    def to_host(self, scalars: list[Any]) -> np.ndarray:
        """Stack device scalars (and the 1-D results of :meth:`reduce_rows`, flattened in order)
        and copy them to the host as one float64 array: the one transfer of a check."""

    # -- many tensors at once (none unless a framework says so) ----------------------------------
    def batch_key(self, x: Any) -> Hashable | None:
        """What tensors reduced together by :meth:`reduce_rows` share (their device and dtype);
        None, the default, reduces ``x`` on its own with :meth:`full_stats`."""
        return None

    def reduce_rows(self, tensors: list[Any], layout: Layout, state: dict[str, Any], snapshot: bool) -> Any:
        """The per-row results of ``tensors`` (same :meth:`batch_key`, placed by ``layout``) as one
        1-D float64 device tensor, for each slice in turn :data:`~dualwatch._device.COLUMNS` blocks of
        one value per row (see :meth:`dualwatch._device.Layout.combine`).

        ``state`` is kept by the reducer for this batch between checks (empty at first, emptied when
        the snapshots are dropped): the backend keeps there what it builds once per layout, and,
        with ``snapshot``, the weights of this check, against which the next one's ``sum |x - prev|``
        is taken (the first check's is compared with zeros and not reported).
        """
        raise _lacking(self, "reduce_rows", "batched reductions")

    def register_forward_hook(self, layer: str, hook: Callable[[Any, Any, Any], None]) -> Any:
        """Calls ``hook(module, inputs, output)`` after submodule ``layer`` runs; returns a handle
        whose ``remove()`` takes the hook away (for activation capture)."""
        raise _lacking(self, "register_forward_hook", "activation capture")

    # -- parameters split across ranks (none unless a framework says so) -------------------------
    def shard_key(self, param: Any) -> Hashable | None:
        """What identifies the ranks holding ``param``'s other parts; None when it is whole here."""
        return None

    def shard_group(self, key: Hashable, param: Any) -> Any | None:
        """The process group for ``key`` (``param`` is one of its parameters), or None if there is none."""
        raise NotImplementedError

    def all_gather(self, rows: np.ndarray, group: Any) -> np.ndarray:
        """``[ranks, *rows.shape]``: every rank's ``rows`` in ``group``, in one collective."""
        raise NotImplementedError

    # -- engines that step their own optimizer (none unless a framework says so) -----------------
    def hook_optimizer_step(self, check: Callable[[int], Any]) -> Callable[[], None] | None:
        """Where the model is an engine that steps its own optimizer (DeepSpeed), has ``check(step)``
        run just before each optimizer step, where the gradients are final, with the engine's count of
        steps; returns what removes the hook. None, the default: the user calls ``Watcher.step``."""
        return None

    # -- parameters partitioned across ranks, each whole on one (pipeline stages) ----------------
    def stage(self) -> tuple[int, int, Any] | None:
        """``(index, count, group)`` when the model is stage ``index`` of a pipeline of ``count``
        stages whose other stages' parameters live on the other ranks of ``group`` (as
        :meth:`all_gather` takes it); None, the default, when this rank holds the whole model.
        Called once, when watching starts (see :mod:`dualwatch._stages`)."""
        return None

    def shared_with_other_stages(self) -> set[str]:
        """Names of this stage's parameters that other stages hold too and the framework keeps equal,
        weights and (by the end of the pipeline's backward) gradients: tied weights such as an input
        embedding reused by the output layer. An empty set by default."""
        return set()

    def all_gather_object(self, obj: Any, group: Any) -> list[Any]:
        """Every rank's picklable ``obj`` in ``group``, in the group's rank order, in one collective."""
        raise NotImplementedError


def _lacking(owner: Framework | Backend, method: str, feature: str) -> NotImplementedError:
    name = owner.name if isinstance(owner, Framework) else owner.framework.name
    return NotImplementedError(f"{feature} need {type(owner).__name__}.{method}, which {name} does not give")
