"""``WatchCallback``: the VisualDL training guide's scalars and the ESAM guide's report in ``Model.fit``.

Add it to ``fit(..., callbacks=[WatchCallback(logdir="runs")])``. Per epoch (step = epoch) it
writes ``Loss/Train``, ``Learning_Rate``, ``Time/Epoch_Duration`` and, with ``eval_data``,
``Loss/Validation``; every ``every`` optimizer steps (step = global batch number) it runs one
:class:`~dualwatch.Watcher` check: ``Model/Gradient_Norm``, ``Model/Parameter_Norm``,
``Model/Total_Parameters``, the per-parameter weight/gradient statistics and the health verdict.

After each batch that had a check it also gives the ESAM BiFusion training guide's report
(``report=True``, the default): the framed "Enhanced Training Stats - Iter N" block on the
``dualwatch`` logger, with the batch's loss breakdown (hapi's ``logs["loss"]``, one value per
loss output: ``loss``, or ``loss_0``, ``loss_1``...; written as ``train/detailed_loss/<name>``),
the stat groups the network sets in a ``dualwatch_stats`` attribute (``{"fusion":
{"2d_weight_mean": ...}, "projection": {...}}``, written as ``train/<group>/<name>``), the
gradient health of the check and the guide's normal ranges. ``report=False`` logs the compact
per-parameter "Model Monitor" block instead and writes no report tags.

Where the gradients are read, and why there: hapi's ``train_batch`` runs ``loss.backward()``,
then ``optimizer.minimize(loss)`` (AMP: ``GradScaler.minimize``, which unscales first), then
``network.clear_gradients()``, and only then the ``on_train_batch_end`` callbacks, so no
callback method sees a gradient. Paddle has no optimizer step hook, and tensor hooks
(``register_hook``) fire inside backward with one parameter's gradient at a time, before
gradient accumulation and AMP unscaling. So for the length of ``fit`` this callback wraps the
optimizer's own ``minimize`` and ``step`` (instance attributes, removed at ``on_train_end``): a
check runs just before the update, where the gradients are accumulated, all-reduced
(DataParallel), unscaled and not yet clipped (clipping happens inside the update), and the
weights are the ones those gradients belong to. Under AMP, paddle's own optimizers are called
on overflow steps too (the update kernel skips itself), so the check reports the NaN/Inf there.
Steps that are not checked cost one bool test.

hapi's epoch-end ``logs["loss"]`` is the last batch's loss only, so the epoch's ``Loss/Train``
(and ``Loss/Validation``) is the mean of its per-batch losses, averaged here.
``Time/Epoch_Duration`` is the wall time from one epoch's end to the next (the first from
the start of training), validation included.

hapi counts epochs and batches from 0 at every ``fit``. With ``resume=True`` a ``fit`` that
writes into an existing ``run`` continues its curves instead: epochs and batch steps go on
after the last ones in the run, so nothing is drawn twice in VisualDL or TensorBoard.

Every rank builds the Watcher and checks: where parameters are split across ranks
(``shard_tensor`` DistTensors, fleet's tensor-parallel layers) a check gathers the shards'
statistics in a collective that all ranks must join, so a Watcher on rank 0 alone would wait
there forever. Only global rank 0 writes and logs (dualwatch's writer is silent on other ranks).
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Mapping, Sequence

import paddle

from dualwatch import _log
from dualwatch._distributed import global_rank
from dualwatch._rules import ESAM_RULES, Rule, load_rules
from dualwatch._selection import check_aggregate, check_stats
from dualwatch._tags import EPOCH_DURATION, LEARNING_RATE, LOSS, PARAMETER_STATS, VAL_LOSS
from dualwatch._watcher import Watcher
from dualwatch.integrations._options import frequency
from dualwatch.readers import RunReader

_UPDATES = ("minimize", "step")  # the optimizer entry points hapi and custom loops call
_EPOCH_TAGS = (LOSS, VAL_LOSS, LEARNING_RATE, EPOCH_DURATION)  # the tags whose step is the epoch


class WatchCallback(paddle.callbacks.Callback):
    """Watches the network of the ``paddle.Model`` being fitted: every rank checks, rank 0 writes.

    Args:
        every: check the weights and gradients every ``every`` optimizer steps (default 10).
        log_freq: the same, in the spelling of Paddle's own callbacks; give one of the two.
        logdir / run: where the run is written (``<logdir>/<run>``, the guide's ``logs_%m%d%H%M``
            by default), in VisualDL, TensorBoard and ``metrics.jsonl`` at once.
        resume: continue the existing ``run`` (``run=`` must name it): epochs and steps go on
            after the last ones written there, so re-running ``fit`` extends the curves.
        console: log one framed block per check on the ``dualwatch`` logger (rank 0): the
            report with ``report=True``, else the per-parameter "Model Monitor" block.
        report: the ESAM guide's report after each checked batch (see the module docstring).
        rules: the report's normal ranges: a rules file (JSON or YAML, as
            ``examples/rules_esam.json``) or rules; by default the ESAM guide's table.
        watch: any other keyword of :class:`~dualwatch.Watcher` (``module``, ``include``,
            ``groups``, ``log_weights``, ``log_gradients``, ``thresholds``, and the tag budget's
            ``stats`` and ``aggregate``...).
    """

    def __init__(
        self,
        *,
        every: int | None = None,
        log_freq: int | None = None,
        logdir: str | os.PathLike[str] | None = "runs",
        run: str | None = None,
        resume: bool = False,
        console: bool = True,
        report: bool = True,
        rules: str | os.PathLike[str] | Sequence[Rule] = ESAM_RULES,
        **watch: Any,
    ) -> None:
        super().__init__()
        if not isinstance(resume, bool):
            raise TypeError(
                f"resume= is True (continue the run's curves) or False, got {resume!r}; "
                "hapi restarts its step count at every fit, so a step to resume from has no meaning here"
            )
        if resume and run is None:
            raise ValueError("resume=True needs run=<the run's directory name>, for example run='exp1'")
        self.every = frequency(every, log_freq=log_freq)
        self._options: dict[str, Any] = dict(
            every=self.every, logdir=logdir, run=run, console=console and not report, **watch
        )
        inspect.signature(Watcher).bind(None, **self._options)  # a misspelt keyword fails here, not in fit
        if "stats" in watch:  # and so does a misspelt statistic, or a wrong depth
            self._options["stats"] = check_stats(watch["stats"], PARAMETER_STATS)
        if "aggregate" in watch:
            self._options["aggregate"] = check_aggregate(watch["aggregate"])
        self._resume = resume
        self._console = console
        self._report = report
        self._rules = load_rules(os.fspath(rules)) if isinstance(rules, (str, os.PathLike)) else tuple(rules)
        self.watcher: Watcher | None = None
        self._optimizer: Any = None
        self._step = 0  # train batch number of this fit, across epochs
        self._checked = -1  # the batch number of the latest check
        self._first_step = 0  # the step written for batch 0 (after the resumed run's last one)
        self._first_epoch = 0
        self._epoch = 0
        self._due = False  # a check is due at the next optimizer update
        self._lr: float | None = None
        self._losses: list[float | None] = []
        self._val_losses: list[float | None] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._step, self._checked, self._due = 0, -1, False
        options = dict(self._options)
        if self._resume:
            last_epoch, last_step = _last_steps(options["logdir"], options["run"])
            # The batches after the last check were never written; the next one due was at
            # last_step + every, so continuing there keeps the cadence and passes them all.
            self._first_epoch = last_epoch + 1
            self._first_step = last_step + self.every if last_step >= 0 else 0
            # Nothing written before is dropped: the new records all come after the old ones.
            options["resume"] = max(self._first_epoch, self._first_step)
        self.watcher = Watcher(self.model.network, **options)
        self._optimizer = self.model._optimizer
        for name in _UPDATES:
            setattr(self._optimizer, name, self._checked_update(getattr(self._optimizer, name)))

    def _checked_update(self, update: Callable[..., Any]) -> Callable[..., Any]:
        """``update`` preceded by the check when one is due: the gradients are final there."""

        def checked_update(*args: Any, **kwargs: Any) -> Any:
            if self._due:
                self._due = False
                self._checked = self._step
                self.watcher.check(self._first_step + self._step)
            return update(*args, **kwargs)

        return checked_update

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = self._first_epoch + epoch
        self._losses = []

    def on_train_batch_begin(self, step: int, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        # The local batch number decides, so every rank checks at the same batches.
        self._due = self._due or self._step % self.every == 0
        self._lr = float(self._optimizer.get_lr())

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        if self._report and self._checked == self._step:
            step_written = self._first_step + self._step
            text = self.watcher.report(step_written, _loss_breakdown(logs), rules=self._rules)
            if self._console and self.watcher.writer.rank == 0:
                _log.info(text)
        self._step += 1
        self._losses.append(_batch_loss(logs))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        self.watcher.log_training(self._epoch, loss=_mean(self._losses), lr=self._lr)
        self.watcher.end_epoch(self._epoch)

    def on_eval_begin(self, logs: dict | None = None) -> None:
        self._val_losses = []

    def on_eval_batch_end(self, step: int, logs: dict | None = None) -> None:
        if self.watcher is not None:
            self._val_losses.append(_batch_loss(logs))

    def on_eval_end(self, logs: dict | None = None) -> None:
        if self.watcher is not None:
            self.watcher.log_training(self._epoch, val_loss=_mean(self._val_losses))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        for name in _UPDATES:
            vars(self._optimizer).pop(name, None)
        self.watcher.close()


def watch_fleet_optimizer(watcher: Watcher, optimizer: Any) -> None:
    """Run ``watcher``'s checks inside fleet's ``optimizer.step()``, where the gradients are synchronised.

    ``optimizer`` is what ``fleet.distributed_optimizer`` returned (a ``HybridParallelOptimizer``).
    Call this once, before training, on every rank; then train as usual, ``watcher.step(step)``
    after ``loss.backward()`` and before ``optimizer.step()``: a check that falls due there waits
    for that ``optimizer.step()`` (or ``minimize``), and runs in it right after fleet has
    synchronised the gradients and before any update, so ``watcher.step`` returns ``{}`` and the
    scalars are in ``watcher.last.scalars`` once the step returns.

    Why: under sharding stage 1 (``sharding_degree`` > 1, ``DygraphShardingOptimizer``) every rank
    holds, after backward, the gradients of its own batch only; ``step()`` averages each one onto
    the rank that owns it (``paddle.distributed.reduce``), and nowhere else is the global gradient.
    So a check reads each parameter on its owner rank only (others skip it) and one ``all_gather``
    of the statistics table over the sharding group (``parameters x 15`` float64 per rank) gives
    every rank the rows of the whole job: no gradient bytes are moved beyond fleet's own reduce,
    and each rank reduces only its own share of the model. Reducing the gradients ourselves
    before ``step()`` would move the whole gradient once more per check (one reduce per
    parameter, as fleet does) and copy it. With data parallelism beside sharding (``dp_degree``
    > 1) fleet's all-reduce over the data-parallel group also runs before the check (not tried on
    the CPU: ``fleet.init`` of that layout times out creating its gloo groups). Sharding with
    ``split_param`` (V2), ``tensor_fusion`` or ``comm_overlap``, and sharding together with tensor
    parallelism, are refused: their gradients live in fused buffers or slices this reading does
    not know.
    """
    sync = getattr(optimizer, "_hybrid_sync_grad", None)
    if sync is None:
        raise TypeError(
            "watch_fleet_optimizer takes the optimizer that fleet.distributed_optimizer returned "
            f"(a HybridParallelOptimizer), got {type(optimizer).__name__}: pass "
            "fleet.distributed_optimizer(optimizer) after fleet.init(is_collective=True, strategy=...)"
        )
    if getattr(sync, "watcher", None) is not None:
        raise ValueError(
            "this optimizer already runs a Watcher's checks (watch_fleet_optimizer was called for it "
            "before): link one Watcher to it, once"
        )
    if optimizer._sharding_enable:
        _link_sharding(watcher, optimizer._inner_opt, optimizer._hcg)
    check = watcher.check
    due: list[int] = []

    def check_when_synchronised(step: int) -> dict[str, float]:
        due.append(step)
        return {}

    def synchronise_then_check(parameter_list: Any) -> Any:
        result = sync(parameter_list)
        while due:
            check(due.pop(0))
        return result

    synchronise_then_check.watcher = watcher  # type: ignore[attr-defined]
    watcher.check = check_when_synchronised  # type: ignore[method-assign]
    optimizer._hybrid_sync_grad = synchronise_then_check


def _link_sharding(watcher: Watcher, sharding: Any, hcg: Any) -> None:
    """Tell the watcher's backend which rank owns each parameter, refusing layouts not read here."""
    unsupported = [
        name
        for name, on in (
            ("split_param (DygraphShardingOptimizerV2)", not hasattr(sharding, "_param2rank")),
            ("tensor_fusion", getattr(sharding, "tensor_fusion", False)),
            ("comm_overlap", getattr(sharding, "comm_overlap", False)),
            ("tensor parallelism (mp_degree > 1)", hcg.get_model_parallel_world_size() > 1),
        )
        if on
    ]
    if unsupported:
        raise ValueError(
            f"fleet sharding with {', '.join(unsupported)} is not supported: its gradients live in "
            "fused buffers or slices that dualwatch does not read; turn it off, or watch without "
            "watch_fleet_optimizer (the statistics are then each rank's own)"
        )
    ranks = sharding._param2rank  # parameter name -> owner rank; parameters it lacks are not trained
    owner = {id(p): ranks[p.name] for _, p in watcher.backend.parameters() if p.name in ranks}
    watcher.backend.read_owned_rows(
        owner, hcg.get_sharding_parallel_rank(), hcg.get_sharding_parallel_group()
    )


def _last_steps(logdir: str | os.PathLike[str] | None, run: str) -> tuple[int, int]:
    """The last epoch and the last batch step written in ``<logdir>/<run>`` (-1 where none).

    Only rank 0 writes, so only it reads; other ranks need no offsets.
    """
    if logdir is None or global_rank() != 0:
        return -1, -1
    run_dir = os.path.join(os.fspath(logdir), run)
    if not os.path.isdir(run_dir):
        return -1, -1
    reader = RunReader(run_dir)
    reader.poll()
    last = {True: -1, False: -1}
    for tag, series in reader.series.items():
        if series.steps:
            epochs = tag in _EPOCH_TAGS
            last[epochs] = max(last[epochs], series.steps[-1])
    return last[True], last[False]


def _losses_of(logs: Mapping[str, Any] | None) -> list[float]:
    """hapi logs ``loss`` as a list, one value per loss output."""
    loss = (logs or {}).get("loss")
    if loss is None:
        return []
    return [float(v) for v in (loss if isinstance(loss, (list, tuple)) else [loss])]


def _loss_breakdown(logs: Mapping[str, Any] | None) -> dict[str, float]:
    """``{"loss": v}`` for one loss output, ``{"loss_0": a, "loss_1": b...}`` for several."""
    losses = _losses_of(logs)
    if len(losses) == 1:
        return {"loss": losses[0]}
    return {f"loss_{i}": value for i, value in enumerate(losses)}


def _batch_loss(logs: Mapping[str, Any] | None) -> float | None:
    """The sum of the loss outputs: what hapi minimised."""
    losses = _losses_of(logs)
    return float(sum(losses)) if losses else None


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
