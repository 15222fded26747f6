"""Lightning: the ``DualwatchLogger`` logger and the StableSR edge monitor callback, ``EdgeMonitorCallback``.

``Trainer(logger=DualwatchLogger("logs"))`` writes everything ``self.log`` logs, the
hyper-parameters and the model graph to VisualDL, TensorBoard and JSON lines at once, in
``logs/lightning_logs/version_N`` as ``TensorBoardLogger`` lays runs out.

``EdgeMonitorCallback`` checks weights and gradients in ``on_before_optimizer_step``, the one
point where gradients are final: it runs once per optimizer step (after
``accumulate_grad_batches`` micro-batches), after AMP unscaling and before gradient clipping and
``optimizer.step()``; ``on_after_backward`` would see every micro-batch's partial, still-scaled
gradient. The step is ``trainer.global_step`` (optimizer steps so far), so ``every=10`` checks
steps 0, 10, 20...

Every rank builds the callback's Watcher in ``setup``, so a wrong ``module=`` fails on all ranks
before training rather than leaving the others waiting, and every rank checks: under FSDP a check
gathers the shards' statistics in a collective that all ranks must join. Only global rank 0
writes. Both classes take plain YAML values only, so they are built from latent-diffusion's
``target:``/``params:`` config as well as from LightningCLI's ``class_path``/``init_args``.

These classes subclass ``lightning.pytorch`` (Lightning 2.x; ``pytorch_lightning`` 2.x when
``lightning`` is not installed); :mod:`dualwatch.integrations.pytorch_lightning` has the same
classes on ``pytorch_lightning``, whose ``Trainer`` and ``LightningCLI`` check the base class.
The behaviour lives in the ``_EdgeMonitor`` and ``_Logger`` mixins, shared by both.
"""

from __future__ import annotations

import os
import time
from argparse import Namespace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from lightning_utilities.core.rank_zero import rank_zero_only

try:
    import lightning.pytorch as pl
    from lightning.fabric.utilities.logger import (
        _add_prefix,
        _convert_params,
        _flatten_dict,
        _sanitize_params,
    )
    from lightning.pytorch.core.saving import save_hparams_to_yaml
    from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
except ImportError:  # only the pytorch_lightning package is installed
    import pytorch_lightning as pl
    from lightning_fabric.utilities.logger import (
        _add_prefix,
        _convert_params,
        _flatten_dict,
        _sanitize_params,
    )
    from pytorch_lightning.core.saving import save_hparams_to_yaml
    from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment

from dualwatch._selection import check_aggregate, check_stats, find_module
from dualwatch._tags import EPOCH_DURATION, GRADIENT, MODEL, PARAMETER_STATS
from dualwatch._warn import warn
from dualwatch._watcher import Watcher
from dualwatch._writer import DEFAULT_FORMATS, Writer
from dualwatch.integrations._options import frequency
from dualwatch.readers._discover import log_files

#: the submodule watched by default when the model has one (the StableSR edge processor)
EDGE_PROCESSOR = "edge_processor"
#: the callback's run directory inside the trainer logger's version directory
RUN = "dualwatch"
#: the tags ``log_to_trainer="summary"`` forwards: the model totals and the global gradient health
SUMMARY_TAGS = (f"{MODEL}/", f"{GRADIENT}/")
#: ``callback_metrics`` keys taken as the training and validation loss, first found first
TRAIN_LOSS_KEYS = ("train_loss", "train/loss", "loss", "train_loss_step", "train/loss_step", "loss_step")
VAL_LOSS_KEYS = ("val_loss", "val/loss", "valid_loss", "validation_loss", "val_loss_epoch", "val/loss_epoch")
#: a resume step after every record: a logger reopened after ``finalize`` keeps all it wrote
_KEEP_ALL = 1 << 62


class _Logger:
    """A Lightning ``Logger`` writing one dualwatch run (VisualDL, TensorBoard, JSON lines).

    Runs are laid out as ``TensorBoardLogger`` lays them out: ``<save_dir>/<name>/version_<N>``
    (the next free N), or ``<save_dir>/<name>/<version>`` for a string ``version``, so
    ``visualdl --logdir <save_dir>`` and ``tensorboard --logdir <save_dir>`` show every run and
    ``ModelCheckpoint`` puts its ``checkpoints/`` inside the run.

    Args:
        save_dir: the directory the viewers are pointed at.
        name: the experiment's directory inside it (``""``: none).
        version: an int (``version_<N>``) or the run directory's name; by default the next free
            ``version_<N>``, or with ``resume`` the newest one.
        resume: continue the run instead of starting one (``True``: from the first step this
            session writes, an int: from that step; records at or after it are dropped from the
            old files, so after ``Trainer.fit(ckpt_path=...)`` the curves go on with no step
            shown twice). Without it, a run that already holds logs is an error, raised when the
            trainer starts.
        log_graph: log the model's graph when Lightning asks (at ``fit``), from ``input_array`` or
            the model's ``example_input_array``, as ``TensorBoardLogger(log_graph=True)`` does.
        prefix: put before every metric name, joined by ``-`` as Lightning's loggers join it.
        formats: the files written, see :class:`dualwatch.Writer`.
        **writer_options: more :class:`dualwatch.Writer` keywords (``max_latency``, ``display_name``...).

    ``experiment`` is the run's :class:`dualwatch.Writer` (rank 0; a no-op object elsewhere):
    ``logger.experiment.add_image(...)``, ``add_histogram``... write to every format.
    :class:`EdgeMonitorCallback` writes its checks into this run when the trainer has this logger.
    """

    LOGGER_JOIN_CHAR = "-"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(
        self,
        save_dir: Union[str, os.PathLike],
        name: Optional[str] = "lightning_logs",
        version: Optional[Union[int, str]] = None,
        resume: Union[bool, int] = False,
        log_graph: bool = False,
        prefix: str = "",
        formats: Sequence[str] = DEFAULT_FORMATS,
        **writer_options: Any,
    ) -> None:
        super().__init__()
        if not isinstance(resume, (bool, int)):
            raise TypeError(f"resume= is True, False or the step to resume from, got {resume!r}")
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._resume = resume
        self._log_graph = log_graph
        self._prefix = prefix
        self._formats = tuple(formats)
        self._writer_options = writer_options
        self._experiment: Optional[Writer] = None
        self._finalized = False  # a later write reopens the run, keeping what is there
        self._pending_hparams: Optional[tuple[Dict[str, Any], Any]] = None
        self._last_step: Optional[int] = None
        self.hparams: Any = {}

    # -- where the run is ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> Union[int, str]:
        """The version given, else the next free ``version_<N>`` (the newest one with ``resume``)."""
        if self._version is None:
            taken = _versions(self.root_dir)
            if self._resume is not False and taken:
                self._version = max(taken)
            else:
                self._version = max(taken) + 1 if taken else 0
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        """``<save_dir>/<name>``: where the versions of this experiment are."""
        return os.path.join(self._save_dir, self._name)

    @property
    def log_dir(self) -> str:
        """``<save_dir>/<name>/<version>``: the run directory itself."""
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.expanduser(os.path.expandvars(os.path.join(self.root_dir, version)))

    @property
    @rank_zero_experiment
    def experiment(self) -> Writer:
        """The run's :class:`dualwatch.Writer`, opened at first use (on global rank 0 only)."""
        if self._experiment is None:
            self._experiment = self._open()
        return self._experiment

    def _open(self) -> Writer:
        run_dir = self.log_dir
        resume = _KEEP_ALL if self._finalized else self._resume
        if resume is False and log_files(run_dir):
            raise ValueError(
                f"{run_dir!r} already holds a run: pass resume=True to continue it "
                f"(after Trainer.fit(ckpt_path=...)), or another version= (got version={self._version!r})"
            )
        return Writer(log_dir=run_dir, resume=resume, formats=self._formats, **self._writer_options)

    # -- what Lightning calls --------------------------------------------------------------------

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: Optional[int] = None) -> None:
        """One record per call; a dict value is logged as ``<name>/<key>`` tags (``add_scalars``)."""
        step = 0 if step is None else step
        self._last_step = step
        if self._pending_hparams is not None:
            self._write_hparams(*self._pending_hparams, step)
        scalars: Dict[str, Any] = {}
        for name, value in _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if isinstance(value, Mapping):
                scalars.update({f"{name}/{key}": v for key, v in value.items()})
            else:
                scalars[name] = value
        self.experiment.log(step, scalars)

    @rank_zero_only
    def log_hyperparams(
        self,
        params: Union[Dict[str, Any], Namespace, Any],
        metrics: Optional[Union[Mapping[str, Any], float]] = None,
        step: Optional[int] = None,
    ) -> None:
        """Dicts, ``Namespace``s and OmegaConf configs, nested ones flattened to ``a/b`` keys (as
        ``TensorBoardLogger`` does) and written to every viewer's hyper-parameter view.

        Values that are not bool, int, float or str are written as text. ``metrics`` (a dict, or
        one number taken as ``hp_metric``) are logged as scalars and listed as the run's metrics.
        In a run resumed with ``resume=True``, hyper-parameters logged without a step (as
        Lightning logs them) wait for the first metrics, so they do not decide the resume step.
        """
        params = _convert_params(params)
        if _is_omegaconf(params):
            from omegaconf import OmegaConf

            self.hparams = OmegaConf.merge(self.hparams, params)
        else:
            self.hparams.update(params)
        flat = {name: _hparam_value(value) for name, value in _sanitize_params(_flatten_dict(params)).items()}
        if metrics is not None and not isinstance(metrics, Mapping):
            metrics = {"hp_metric": metrics}
        step = self._last_step if step is None else step
        if step is None and self._resume is True:
            self._pending_hparams = (flat, metrics)
            return
        self._write_hparams(flat, metrics, step or 0)

    def _write_hparams(self, flat: Dict[str, Any], metrics: Any, step: int) -> None:
        self._pending_hparams = None
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR) if metrics else None
        self.experiment.add_hparams(flat, metrics, step=step)

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """The model's graph (with ``log_graph=True``), traced on ``input_array`` or the model's
        ``example_input_array`` after Lightning's batch transfer hooks, as ``TensorBoardLogger`` does."""
        if not self._log_graph:
            return
        input_array = getattr(model, "example_input_array", None) if input_array is None else input_array
        if input_array is None:
            warn(
                "the model graph is not logged: set model.example_input_array or pass input_array=",
                UserWarning,
            )
            return
        if callable(getattr(model, "_apply_batch_transfer_handler", None)):
            input_array = model._apply_batch_transfer_handler(model._on_before_batch_transfer(input_array))
        self.experiment.add_graph(model, input_array)

    @rank_zero_only
    def save(self) -> None:
        """Writes what is queued and, once, the run's ``hparams.yaml`` (``load_from_checkpoint`` reads it)."""
        if self._experiment is None:
            return
        self._experiment.flush()
        path = os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)
        if os.path.isdir(self.log_dir) and not os.path.isfile(path):
            save_hparams_to_yaml(path, self.hparams)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Closes the files; a later ``fit``/``test`` on this logger continues the same run."""
        if self._experiment is None:
            return
        if self._pending_hparams is not None:
            warn(
                "hyper-parameters of this resumed run were not written: no metric was logged after "
                "them. Log a metric, or pass the resume step as resume=<step>",
                UserWarning,
            )
            self._pending_hparams = None
        if status == "success":
            self.save()
        self._experiment.close()
        self._experiment = None
        self._finalized = True

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_experiment"] = None  # a spawned process opens its own (and writes only on rank 0)
        return state


class _EdgeMonitor:
    """Every ``every`` optimizer steps, logs weight and gradient statistics of ``module``.

    With its defaults, the StableSR YAML's callback (``check_frequency``, ``log_gradients``,
    ``log_weights``) needs nothing else: it watches the model's ``edge_processor`` and writes
    VisualDL, TensorBoard and JSON-lines files inside the trainer's log directory.

    Args:
        every: check every this many optimizer steps, counting from step 0 (the first
            positional argument; ``check_frequency=``, the StableSR callback's name, is the same).
        log_gradients / log_weights: per-parameter gradient and weight statistics.
        stats / aggregate: the tag budget, as for :class:`~dualwatch.Watcher`: which
            per-parameter statistics (all ten by default, the StableSR callback's set), and
            per module at a depth instead of per parameter (``stats=("grad_norm",
            "weight_change"), aggregate=2`` for a big model).
        module: the watched submodule; a name matches a direct child or one unique nested
            submodule (``edge_processor`` finds ``model.edge_processor``), and tags keep the name
            given (``edge_processor/<param>/<stat>``). By default the model's ``edge_processor``
            when it has one, else the whole model (tags ``model/...``); ``""`` is the whole model.
        include: globs or ``"re:<regex>"`` strings selecting parameters inside ``module``.
        groups: group name to regex or module prefix; each group's norm and share is logged.
        logdir: where the run goes. By default, inside the trainer's log directory:

            * the trainer has a :class:`DualwatchLogger` (and ``run`` is not given): into that
              logger's run, beside what ``self.log`` logs;
            * else a run ``dualwatch`` (or ``run``) inside the first logger's version directory
              (``lightning_logs/version_0/dualwatch``: ``visualdl --logdir lightning_logs`` and
              ``tensorboard --logdir lightning_logs`` list it under the trainer's run);
            * a trainer without a logger: a new ``logs_%m%d%H%M`` run (or ``run``) in
              ``<default_root_dir>/lightning_logs``.
        run / formats: that run's name and file formats, see :class:`dualwatch.Writer`.
        resume: continue the run (``True``, or the step to continue from), see
            :class:`dualwatch.Writer`: with a fixed run (a pinned logger ``version``, or ``run``),
            re-running ``fit(ckpt_path=...)`` continues the curves. With a :class:`DualwatchLogger`
            its own ``resume`` decides.
        console: log the "Edge Processor Monitor - Step N" block at each check on the
            ``dualwatch`` logger (above Lightning's progress bar).
        report: at each check also log the ESAM guide's framed report, with the training losses
            of ``callback_metrics`` (every key with ``loss`` in it that is not a validation one).
        log_to_trainer: what each check also sends to the trainer's other loggers
            (WandB, CSV...): ``"summary"`` (default) the ``Model/*`` and ``train/gradient/*``
            totals, ``True`` every statistic, ``False`` nothing. The per-parameter statistics
            (hundreds of tags) are in dualwatch's own files either way; sending them to every
            logger at each check costs more than the check.

    Besides the checks it writes the VisualDL training guide's curves: ``Loss/Train`` and
    ``Learning_Rate`` (the first optimizer's first parameter group) at each check,
    ``Loss/Validation`` after each validation and ``Time/Epoch_Duration`` (seconds, training and
    validation) after each epoch; the losses are the ``callback_metrics`` of ``self.log``
    (``train_loss``, ``train/loss`` or ``loss``; ``val_loss`` or ``val/loss``). Epoch-end values
    are at the epoch's last step, where Lightning's own loggers put them. A model attribute
    ``dualwatch_stats`` (``{"fusion": {"gate_mean": ...}}``) is logged as ``train/<group>/<name>``
    at each check.

    After ``setup``, ``watcher`` is the :class:`~dualwatch.Watcher` and ``last`` holds the
    scalars of the latest check.
    """

    def __init__(
        self,
        every: Optional[int] = None,
        log_gradients: bool = True,
        log_weights: bool = True,
        module: Optional[str] = None,
        include: Union[str, List[str], None] = None,
        groups: Optional[Dict[str, str]] = None,
        logdir: Optional[str] = None,
        run: Optional[str] = None,
        formats: Sequence[str] = DEFAULT_FORMATS,
        console: bool = True,
        *,
        check_frequency: Optional[int] = None,
        resume: Union[bool, int] = False,
        report: bool = False,
        log_to_trainer: Union[bool, str] = "summary",
        stats: Union[str, Sequence[str]] = PARAMETER_STATS,
        aggregate: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.stats = check_stats(stats, PARAMETER_STATS)  # a misspelt name fails here, not in fit
        self.aggregate = check_aggregate(aggregate)
        if log_to_trainer not in (True, False, "summary"):
            raise ValueError(f"log_to_trainer= is True, False or 'summary', got {log_to_trainer!r}")
        if not isinstance(resume, (bool, int)):
            raise TypeError(f"resume= is True, False or the step to resume from, got {resume!r}")
        self.every = frequency(every, check_frequency=check_frequency)
        self.log_gradients = log_gradients
        self.log_weights = log_weights
        self.module = module
        self.include = include
        self.groups = groups
        self.logdir = logdir
        self.run = run
        self.formats = tuple(formats)
        self.console = console
        self.resume = resume
        self.report = report
        self.log_to_trainer = log_to_trainer
        self.watcher: Optional[Watcher] = None
        self.last: Dict[str, float] = {}
        self._forward_to: List[Any] = []
        self._epoch_started = 0.0

    @property
    def check_frequency(self) -> int:
        """``every``, by the StableSR callback's name."""
        return self.every

    def setup(self, trainer: Any, pl_module: Any, stage: Optional[str] = None) -> None:
        if stage not in (None, "fit") or self.watcher is not None:
            return
        module = self.module
        if module is None:
            names = [name for name, _ in pl_module.named_modules()]
            module = EDGE_PROCESSOR if find_module(EDGE_PROCESSOR, names) else ""
        writer, logdir, run = self._destination(trainer)
        self.watcher = Watcher(
            pl_module,
            every=self.every,
            module=module,
            include=self.include,
            groups=self.groups,
            log_weights=self.log_weights,
            log_gradients=self.log_gradients,
            stats=self.stats,
            aggregate=self.aggregate,
            logdir=logdir,
            run=run,
            resume=self.resume if writer is None else False,
            formats=self.formats,
            console=self.console,
            writer=writer,
        )
        if trainer.is_global_zero and self.log_to_trainer:
            self._forward_to = [lg for lg in trainer.loggers if not isinstance(lg, _Logger)]

    def _destination(self, trainer: Any) -> tuple[Optional[Writer], Optional[str], Optional[str]]:
        """``(writer, logdir, run)`` of the Watcher: the rules of the ``logdir`` argument."""
        if self.logdir is not None:
            return None, self.logdir, self.run
        if not trainer.is_global_zero:
            return None, None, None  # nothing is written there; no logger is asked for a directory
        if self.run is None:
            for logger in trainer.loggers:
                if isinstance(logger, _Logger):
                    return logger.experiment, None, None
        log_dir = next((lg.log_dir for lg in trainer.loggers if lg.log_dir), None)
        if log_dir is not None:
            return None, log_dir, self.run or RUN
        return None, os.path.join(trainer.default_root_dir, "lightning_logs"), self.run

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_started = time.perf_counter()

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, *_: Any) -> None:
        step = trainer.global_step
        if self.watcher is None or step % self.every:
            return
        watcher = self.watcher
        scalars = watcher.check(step)
        metrics = trainer.callback_metrics  # on every rank: it may reduce across ranks
        optimizers = trainer.optimizers
        lr = optimizers[0].param_groups[0].get("lr") if optimizers else None
        watcher.log_training(step, loss=_first(metrics, TRAIN_LOSS_KEYS), lr=lr)
        if self.report:
            watcher.report(step, _train_losses(metrics))
        else:
            for group, values in (getattr(pl_module, "dualwatch_stats", None) or {}).items():
                watcher.log_stats(step, group, values)
        if scalars:
            self.last = scalars
            if self._forward_to:
                if self.log_to_trainer == "summary":
                    scalars = {tag: v for tag, v in scalars.items() if tag.startswith(SUMMARY_TAGS)}
                for logger in self._forward_to:
                    logger.log_metrics(scalars, step=step)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.watcher is None or trainer.sanity_checking:
            return
        val_loss = _first(trainer.callback_metrics, VAL_LOSS_KEYS)
        if val_loss is not None:
            self.watcher.log_training(_epoch_step(trainer), val_loss=val_loss)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.watcher is not None:
            seconds = time.perf_counter() - self._epoch_started
            self.watcher.writer.add_scalar(EPOCH_DURATION, seconds, _epoch_step(trainer))

    def teardown(self, trainer: Any, pl_module: Any, stage: Optional[str] = None) -> None:
        if self.watcher is not None and stage in (None, "fit"):
            self.watcher.close()
            self.watcher = None
            self._forward_to = []


class DualwatchLogger(_Logger, Logger):
    __doc__ = _Logger.__doc__


class EdgeMonitorCallback(_EdgeMonitor, pl.Callback):
    __doc__ = _EdgeMonitor.__doc__


def _versions(root_dir: str) -> List[int]:
    """The N of every ``version_<N>`` directory in ``root_dir``."""
    try:
        names = os.listdir(root_dir)
    except OSError:
        return []
    return [
        int(n[8:])
        for n in names
        if n.startswith("version_") and n[8:].isdigit() and os.path.isdir(os.path.join(root_dir, n))
    ]


def _is_omegaconf(params: Any) -> bool:
    try:
        from omegaconf import Container
    except ImportError:
        return False
    return isinstance(params, Container)


def _hparam_value(value: Any) -> Union[bool, int, float, str]:
    """What every viewer can show: a one-element tensor's number, anything else not a bool, int,
    float or str as its text."""
    if hasattr(value, "numel") and value.numel() == 1:
        value = value.item()
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _first(metrics: Mapping[str, Any], keys: Sequence[str]) -> Any:
    return next((metrics[key] for key in keys if key in metrics), None)


def _train_losses(metrics: Mapping[str, Any]) -> Dict[str, Any]:
    """The training losses of ``callback_metrics`` for the report: ``train/loss`` -> ``loss``
    (the total), ``train_edge_loss_step`` -> ``edge_loss``; validation and epoch values left out."""
    losses: Dict[str, Any] = {}
    for key, value in metrics.items():
        lower = key.lower()
        if "loss" not in lower or lower.startswith(("val", "test")) or lower.endswith("_epoch"):
            continue
        name = key[6:] if lower.startswith(("train/", "train_")) else key
        losses.setdefault(name[:-5] if name.endswith("_step") else name, value)
    return losses


def _epoch_step(trainer: Any) -> int:
    """The epoch's last optimizer step: where Lightning's loggers put epoch-end values."""
    return max(trainer.global_step - 1, 0)
