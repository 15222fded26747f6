"""MMEngine: ``DualwatchVisBackend`` (VisualDL, TensorBoard and JSON lines as one vis backend) and
``DualwatchHook`` (the ESAM BiFusion training guide's report and gradient health).

Importing this module registers both, in MMEngine's ``VISBACKENDS`` and ``HOOKS`` registries. A
config file says

    custom_imports = dict(imports=["dualwatch.integrations.mmengine"], allow_failed_imports=False)
    visualizer = dict(type="Visualizer", vis_backends=[dict(type="DualwatchVisBackend")])
    custom_hooks = [dict(type="DualwatchHook", every=20, groups={"bifusion": "bi_encoder.fusion"})]

``custom_imports`` is acted on by ``Config.fromfile`` only; a ``Runner`` built in Python (or from
``Config(dict(...))``) needs ``import dualwatch.integrations.mmengine`` before it is built.

Where the run is: MMEngine gives every vis backend ``save_dir = <work_dir>/<timestamp>/vis_data``
and the backend writes its run there, as ``TensorboardVisBackend`` does (it replaces that
backend: listing both doubles every TensorBoard curve). The hook writes into the backend's run
when the runner's visualizer has one, so one run holds MMEngine's scalars (``loss``, ``lr``,
``time``...) and the hook's; without the backend it writes ``<work_dir>/<timestamp>/dualwatch``.

Resuming: MMEngine starts a new ``<timestamp>`` directory at every launch, ``resume=True``
included. A resumed run instead continues the newest earlier run of the same name under the work
dir, from the first iteration trained again: records the first launch wrote after its checkpoint
are dropped (TensorBoard gets a purge marker), so the curves go on and no step shows twice. The
hook knows that iteration (``before_train`` runs after MMEngine loaded the checkpoint) and tells
the backend; a backend without the hook learns of the resume from the config (``resume=True`` and
a checkpoint to resume, as ``Runner.from_cfg`` reads them) and continues from its first step logged.

Where the hook reads gradients, and why there: MMEngine has no hook point between backward and the
optimizer step: ``model.train_step`` calls ``OptimWrapper.update_params``, which runs backward,
``step()`` (clipping, then ``optimizer.step()``) and ``zero_grad()`` in one go, so by
``after_train_iter`` the gradients are zeroed or ``None``. For the length of training the hook
wraps the wrapper's ``step`` (an instance attribute, removed in ``after_train``): the check runs
there, after accumulation (``step`` only runs on update iterations) and the DDP all-reduce,
before clipping, on the weights the gradients belong to. ``AmpOptimWrapper`` gradients are still
loss-scaled at that point, so there the check runs in a step pre-hook of the torch optimizer
instead, after ``GradScaler`` unscaled them: after clipping, and skipped on overflow steps, which
the scaler skips too. Every rank checks (sharded statistics need all of them); only rank 0 writes
and logs.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import HOOKS, VISBACKENDS
from mmengine.visualization.vis_backend import BaseVisBackend, force_init_env

from dualwatch._formats import formats_by_name
from dualwatch._health import Thresholds
from dualwatch._selection import Pattern, check_aggregate, check_stats
from dualwatch._tags import PARAMETER_STATS
from dualwatch._warn import warn
from dualwatch._watcher import Watcher
from dualwatch._writer import DEFAULT_FORMATS, Writer
from dualwatch.integrations._options import frequency
from dualwatch.readers._discover import log_files

#: the resume step of a run re-opened after ``close``: after every record, so nothing is dropped
APPEND = 1 << 62


@VISBACKENDS.register_module()
class DualwatchVisBackend(BaseVisBackend):
    """An MMEngine vis backend writing VisualDL, TensorBoard and JSON lines through one ``Writer``.

    Args:
        save_dir: the run directory; MMEngine's ``Visualizer`` passes ``<log_dir>/vis_data``.
        resume: None follows MMEngine: when the runner resumes, continue the newest earlier run
            of the work dir (see the module docstring). True always continues it, an int
            continues it from that step, False always starts a new run in ``save_dir``.
        formats: any of ``"visualdl"``, ``"tensorboard"``, ``"jsonl"``.

    ``experiment`` is the :class:`~dualwatch.Writer`, for what MMEngine's API has no call for
    (``add_histogram``, ``add_hparams``...). The files open at the first record, not when the
    backend is built, so that the run can follow a resume that MMEngine performs later.
    """

    def __init__(
        self, save_dir: str, resume: bool | int | None = None, formats: Sequence[str] = DEFAULT_FORMATS
    ) -> None:
        super().__init__(save_dir)
        self.resume = _check_resume(resume)
        known = formats_by_name()
        if isinstance(formats, str) or not formats or any(name not in known for name in formats):
            raise ValueError(f"formats= takes a list of {sorted(known)}, got {formats!r}")
        self.formats = tuple(formats)
        self._config: str | None = None  # the config text, written when the run opens
        self._config_resumes = False  # the config resumes a checkpoint
        self._told = False  # DualwatchHook said where the runner resumed ...
        self._resumed_at: int | None = None  # ... at this step (None: it did not resume)
        self._run_dir: str | None = None  # the run once opened; a re-open appends to it
        self._writer: Writer | None = None
        self._skipped: set[str] = set()

    def _init_env(self) -> None:
        resume = self._continues()
        run_dir = self._run_dir or os.path.abspath(self._save_dir)
        if resume is not False and self._run_dir is None:
            previous = _newest_run(run_dir, self.formats)
            run_dir, resume = (previous, resume) if previous else (run_dir, False)
        self._writer = Writer(log_dir=run_dir, resume=resume, formats=self.formats)
        self._run_dir = run_dir
        if self._config is not None and resume is False:
            self._writer.add_text("config", self._config, 0)
        self._config = None

    def _continues(self) -> bool | int:
        """False (a new run), True (continue from the first step logged) or the step to continue from."""
        if self._run_dir is not None:
            return APPEND
        if self.resume is True:
            return self._resumed_at if self._resumed_at is not None else True
        if self.resume is not None:
            return self.resume
        if self._told:
            return self._resumed_at if self._resumed_at is not None else False
        return self._config_resumes

    def resume_from(self, step: int | None) -> None:
        """Where the runner resumed: the first step it trains again, or None when it starts afresh.

        :class:`DualwatchHook` calls this in ``before_train``, which MMEngine runs after loading
        the checkpoint; it decides the run only while ``resume`` is None or True, and only
        before the first record opened the files.
        """
        if self._writer is not None:
            if step is not None and self.resume is None:
                warn(
                    f"the vis backend's run was opened before the runner resumed at step {step}: "
                    "it is not continued. Log nothing to the visualizer before runner.train()",
                    UserWarning,
                )
            return
        self._told, self._resumed_at = True, step

    @property  # type: ignore[misc]
    @force_init_env
    def experiment(self) -> Writer:
        """The :class:`~dualwatch.Writer` of the run."""
        return self._writer

    def add_config(self, config: Config, **kwargs: Any) -> None:
        """The config as text (tag ``config``, a Python code block in both viewers).

        It is written when the run opens, at step 0; a continued run keeps the config its first
        part wrote. A config saying ``resume=True``, with a checkpoint to resume, tells the
        backend that the runner resumes.
        """
        work_dir = config.get("work_dir")
        checkpoint = config.get("load_from") or (
            work_dir and os.path.exists(os.path.join(work_dir, "last_checkpoint"))
        )
        self._config_resumes = bool(config.get("resume", False) and checkpoint)
        text = f"```python\n{config.pretty_text}\n```"
        if self._writer is not None:
            self._writer.add_text("config", text, 0)
        else:
            self._config = text

    @force_init_env
    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs: Any) -> None:
        """An RGB image in MMEngine's layout, ``HWC`` (uint8 0-255 or floats 0-1), or ``HW``."""
        self._writer.add_image(name, image, step, dataformats="HWC" if np.ndim(image) == 3 else "HW")

    @force_init_env
    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        """One scalar; see :meth:`add_scalars` for what is skipped."""
        self.add_scalars({name: value}, step)

    @force_init_env
    def add_scalars(
        self, scalar_dict: Mapping[str, Any], step: int = 0, file_path: str | None = None, **kwargs: Any
    ) -> None:
        """``scalar_dict`` as one record at ``step`` (``file_path`` is LocalVisBackend's; unused).

        As ``TensorboardVisBackend`` does, a value that is not a number or a one-element tensor
        is skipped with a warning (once per tag), and so is a ``step`` key, which would collide
        with the step of the JSON lines.
        """
        numbers = {}
        for tag, value in scalar_dict.items():
            if tag != "step" and _is_number(value):
                numbers[tag] = value
            elif tag not in self._skipped:
                self._skipped.add(tag)
                warn(
                    f"scalar {tag!r} = {value!r} is not written: a scalar is a number or a one-element "
                    "tensor, and the step is the step= argument",
                    UserWarning,
                )
        self._writer.log(step, numbers)

    def close(self) -> None:
        """Writes what is queued and closes the files (a config alone still opens the run).

        A record logged after this (``runner.test()`` after ``runner.train()``) re-opens the run
        and is appended to it, as torch's ``SummaryWriter`` re-opens after ``close``.
        """
        if self._config is not None:
            self.experiment  # noqa: B018  (opening the run writes the config)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._env_initialized = False


@HOOKS.register_module()
class DualwatchHook(Hook):
    """The ESAM guide's loss breakdown, stat groups and gradient health every ``every`` iterations.

    Args:
        every: report every ``every`` training iterations (step ``runner.iter + 1``, MMEngine's
            own logging step). ``interval`` (``LoggerHook``'s spelling) and ``log_interval``
            (the ESAM guide's) are the same option.
        groups: group name to regex or module prefix (``{"bifusion": "bi_encoder.fusion.*"}``);
            each group's gradient norm and share of the squared total are reported.
        module / include / log_weights / log_gradients / stats / aggregate: as for
            :class:`~dualwatch.Watcher` (``stats`` and ``aggregate`` keep the tag count down on a
            big model: ``stats=("grad_norm", "weight_change"), aggregate=2``).
        exploding / vanishing: total-gradient-norm bounds of the verdict (the ESAM guide's 10 and 1e-6).
        logdir / run: without ``logdir``, the hook writes into the run of the visualizer's
            :class:`DualwatchVisBackend`, or else into ``<runner.log_dir>/<run>``; with it, into
            ``<logdir>/<run>``.
        resume: None follows MMEngine: when the runner resumed from a checkpoint, the run
            continues from the first iteration trained again (see the module docstring). True
            continues it from there in any case, an int from that step, False never.
        console: log the framed report through ``runner.logger`` (rank 0), so that it is in
            MMEngine's log file and on its console.

    What it writes every ``every`` iterations, through :meth:`dualwatch.Watcher.report`:

    * the loss breakdown: every entry of the ``train_step`` outputs (``loss``, ``loss_<name>``...)
      as ``train/detailed_loss/<name>``, with its share of ``loss`` in the report;
    * the user's stat groups: a model that sets ``self.dualwatch_stats = {"fusion": {"gate_mean":
      ...}, "projection": {...}}`` (numbers or one-element tensors; typically in ``forward``)
      gets ``train/fusion/gate_mean``... The attribute is read after the iteration, so it holds
      that iteration's values;
    * gradient health from a :class:`~dualwatch.Watcher` check: the verdict, each ``groups``
      entry's norm and share (``train/gradient/<group>/norm|share``), ``train/gradient/total_norm``
      and ``max_grad``, plus the per-parameter weight/gradient statistics and ``Model/*``;
    * the guide's normal ranges, applied to all of these.
    """

    priority = "BELOW_NORMAL"  # as LoggerHook: after hooks that change the outputs

    def __init__(
        self,
        every: int | None = None,
        groups: Mapping[str, Pattern] | None = None,
        module: str | None = None,
        include: Pattern | Sequence[Pattern] | None = None,
        log_weights: bool = True,
        log_gradients: bool = True,
        exploding: float = 10.0,
        vanishing: float = 1e-6,
        logdir: str | os.PathLike[str] | None = None,
        run: str = "dualwatch",
        resume: bool | int | None = None,
        console: bool = True,
        *,
        interval: int | None = None,
        log_interval: int | None = None,
        stats: str | Sequence[str] = PARAMETER_STATS,
        aggregate: int | None = None,
    ) -> None:
        self.every = frequency(every, interval=interval, log_interval=log_interval)
        self.logdir = logdir
        self.run = run
        self.resume = _check_resume(resume)
        self.console = console
        self._options: dict[str, Any] = dict(
            every=self.every,
            module=module,
            include=include,
            groups=groups,
            log_weights=log_weights,
            log_gradients=log_gradients,
            stats=check_stats(stats, PARAMETER_STATS),  # a misspelt name fails here, not in train
            aggregate=check_aggregate(aggregate),
            thresholds=Thresholds(exploding=exploding, vanishing=vanishing),
            console=False,  # the hook logs the report itself, through runner.logger
        )
        self.watcher: Watcher | None = None
        self._model: Any = None
        self._undo: Callable[[], None] = lambda: None
        self._due = False  # a check is due at the next optimizer step
        self._step = 0

    def before_train(self, runner: Any) -> None:
        # Every rank checks (under FSDP a check gathers the shards' statistics in a collective
        # that all ranks join); dualwatch's writer is silent on ranks other than 0.
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._model = model
        resume_at = self._resume_at(runner)
        backend = _vis_backend(runner.visualizer) if self.logdir is None else None
        if backend is not None:
            backend.resume_from(resume_at)
            self.watcher = Watcher(model, writer=backend.experiment, **self._options)
        else:
            logdir, resume = self.logdir or runner.log_dir, False if resume_at is None else resume_at
            if self.logdir is None and resume_at is not None:
                previous = _newest_run(os.path.join(runner.log_dir, self.run), DEFAULT_FORMATS)
                logdir, resume = (os.path.dirname(previous), resume_at) if previous else (logdir, False)
            self.watcher = Watcher(model, logdir=logdir, run=self.run, resume=resume, **self._options)
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, AmpOptimWrapper):
            handle = wrapper.optimizer.register_step_pre_hook(lambda *_: self._check())
            self._undo = handle.remove
        else:
            step = wrapper.step

            def checked_step(*args: Any, **kwargs: Any) -> Any:
                self._check()
                return step(*args, **kwargs)

            wrapper.step = checked_step
            self._undo = lambda: vars(wrapper).pop("step", None)

    def _resume_at(self, runner: Any) -> int | None:
        """The step the run continues from, or None for a new run.

        MMEngine (0.10) records a resume in ``runner._resume`` and a loaded checkpoint in
        ``runner._has_loaded``; ``runner.iter`` is then the checkpoint's iteration.
        """
        if self.resume is False:
            return None
        if self.resume is not None and self.resume is not True:
            return self.resume
        resumed = bool(getattr(runner, "_resume", False)) and bool(getattr(runner, "_has_loaded", False))
        return runner.iter + 1 if self.resume or resumed else None

    def _check(self) -> None:
        if self._due:
            self._due = False
            self.watcher.check(self._step)

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        if self.watcher is not None:
            self._step = runner.iter + 1
            self._due = self._due or self.every_n_train_iters(runner, self.every)

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Mapping[str, Any] | None = None
    ) -> None:
        if self.watcher is None or not self.every_n_train_iters(runner, self.every):
            return
        report = self.watcher.report(runner.iter + 1, outputs or {})
        if self.console and is_main_process():
            runner.logger.info("\n" + report)  # the frame starts on a line of its own

    def after_train(self, runner: Any) -> None:
        if self.watcher is not None:
            self._undo()
            self.watcher.close()


def _check_resume(resume: Any) -> bool | int | None:
    if resume is not None and not isinstance(resume, (bool, int)):
        raise TypeError(
            f"resume= is None (follow MMEngine's resume), True, False or the step to continue from; "
            f"got {resume!r}"
        )
    return resume


def _vis_backend(visualizer: Any) -> DualwatchVisBackend | None:
    """The visualizer's DualwatchVisBackend (its ``_vis_backends``: MMEngine's ``get_backend``
    needs the name and answers on rank 0 only, while every rank's hook needs the run)."""
    backends = getattr(visualizer, "_vis_backends", {}).values()
    return next((b for b in backends if isinstance(b, DualwatchVisBackend)), None)


def _newest_run(run_dir: str, formats: Sequence[str]) -> str | None:
    """Of ``run_dir`` = ``<work_dir>/<timestamp>/<name>`` and its namesakes under other timestamps,
    the newest that holds a dualwatch run (MMEngine's ``%Y%m%d_%H%M%S`` timestamps sort by time).
    TensorBoard files do not make a run one when another format is written: MMEngine's own
    ``TensorboardVisBackend`` writes them in ``vis_data`` too."""
    work_dir, name = os.path.dirname(os.path.dirname(run_dir)), os.path.basename(run_dir)
    marks = [f for f in formats if f != "tensorboard"] or ["tensorboard"]
    runs = sorted(glob.glob(os.path.join(glob.escape(work_dir), "*", glob.escape(name))))
    return next((run for run in reversed(runs) if any(f in log_files(run) for f in marks)), None)


def _is_number(value: Any) -> bool:
    """A Python or numpy number, or a one-element array or tensor (what the Writer stores)."""
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return True
    size = getattr(value, "size", None)  # numpy's and Paddle's an int, torch's a method
    return (value.numel() if callable(size) else size) == 1
