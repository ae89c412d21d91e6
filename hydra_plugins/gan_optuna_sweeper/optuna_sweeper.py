# ruff: noqa: UP006, UP035, UP045  (OmegaConf reads the config dataclass's annotations at run time: typing's forms)
"""The sweeper Hydra finds as ``hydra/sweeper=optuna``: it asks an Optuna study for trials, ``n_jobs`` at a time,
and hands each to the launcher as a job of train.py (basic, joblib or submitit alike).

The search space is written as Hydra's own Optuna sweeper reads it, under ``hydra.sweeper.params`` or on the
command line (``optim.lr='tag(log, interval(0.00005, 0.001))'``, ``seed='range(0,3)'``). The study lives
in ``hydra.sweeper.storage`` (by default ``optuna.db`` in the sweep folder), so the same command again
continues it. What a trial does inside its job is gan/study.py's.
"""

# No `from __future__ import annotations`: Hydra runs this module without registering it in sys.modules,
# where dataclasses would look string annotations up.
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.gan_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    n_trials: int = 20  # trials in the study in all, counting those of earlier runs of the same command
    n_jobs: int = 1  # trials launched together (in parallel with hydra/launcher=joblib or submitit_slurm)
    sampler: str = "tpe"  # tpe | random | grid (grid needs choice() or range())
    pruner: str = "successive_halving"  # successive_halving | median | hyperband | none
    objective: str = "ema.fid"  # the eval.json key the study optimizes; each evaluation is an intermediate value
    direction: Optional[str] = None  # minimize | maximize; by default the objective's own (FID down, recall up)
    storage: Optional[str] = None  # a database URL Optuna takes; by default sqlite:///<sweep dir>/optuna.db
    study_name: Optional[str] = None  # by default the sweep folder's name
    seed: Optional[int] = None  # the sampler's seed
    params: Optional[Dict[str, str]] = None  # the search space, key -> choice(...) | range(...) | interval(...) | tag(log, ...)
    trial: Optional[int] = None  # set by the sweeper on each job: the trial it runs


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="mnist-gan")


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from gan.errors import exit_on_user_error

        with exit_on_user_error():
            return self._sweep(arguments)

    def _known(self, key: str) -> bool:
        assert self.config is not None
        return key in self.config.hydra.runtime.choices or OmegaConf.select(self.config, key, default=_ABSENT) is not _ABSENT

    def _sweep(self, arguments: List[str]) -> Any:
        from gan import study as studies
        from gan.errors import GanError

        assert self.config is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        settings = studies.settings_from(self.config.hydra.sweeper, sweep_dir)
        if not OmegaConf.select(self.config, "eval.enabled", default=False):
            raise GanError(f"the study optimizes {settings.objective}, which only evaluations produce, and eval.enabled is false; "
                           f"leave eval.enabled=true.")
        lines = [f"{key}={value}" for key, value in (self.settings.get("params") or {}).items()] + list(arguments)
        parameters, fixed = studies.search_space(lines, self._known)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        study = studies.open_study(settings, parameters, fixed)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        (sweep_dir / studies.STUDY_FILE).write_text(json.dumps({
            "study": settings.study_name, "storage": settings.storage, "objective": settings.objective, "direction": settings.direction,
            "n_trials": self.settings["n_trials"], "epochs": self.config.epochs, "eval_every": self.config.eval.every,
            "params": {p.key: str(p.distribution) for p in parameters}, "fixed": fixed}, indent=2) + "\n")
        studies.retry_stale(study)
        n_trials, n_jobs = int(self.settings["n_trials"]), max(1, int(self.settings["n_jobs"]))
        log.info("study %s in %s: %d of %d trials done", settings.study_name, settings.storage, studies.trials_done(study), n_trials)
        distributions = {p.name: p.distribution for p in parameters}
        returns = []
        while (remaining := n_trials - studies.trials_done(study)) > 0:
            trials = [study.ask(distributions) for _ in range(min(n_jobs, remaining))]
            numbers = [t.number for t in trials]
            batch = [[*fixed, *(f"{p.key}={studies.override_value(t.params[p.name])}" for p in parameters),
                      f"hydra.sweeper.trial={t.number}", f"hydra.sweeper.storage={studies.override_value(settings.storage)}",
                      f"hydra.sweeper.study_name={studies.override_value(settings.study_name)}"] for t in trials]
            batch, numbers = self._composable(study, batch, numbers, fixed)
            if not batch:
                continue
            try:
                with studies.heartbeats(study, numbers):
                    returns.append(self._launch(batch, numbers))
            except BaseException:  # a stop request, or the launcher itself failed: these trials run again next time
                studies.retry_interrupted(study, numbers, "the sweep stopped")
                raise
            studies.fail_silent(study, numbers)
        studies.log_best(study, sweep_dir)
        return returns

    def _composable(self, study: Any, batch: List[List[str]], numbers: List[int], fixed: List[str]) -> Tuple[List[List[str]], List[int]]:
        """The trials whose overrides compose; the others (a value the config's types refuse) fail in the study, which goes on.
        When the config composes for no trial (a file of conf/ changed under a running sweep), the sweep stops and the
        batch's parameters are queued again, so no trial is spent on it."""
        from gan import study as studies
        from gan.cli import config_error_sentence
        from gan.errors import GanError

        kept: Tuple[List[List[str]], List[int]] = ([], [])
        for overrides, number in zip(batch, numbers):
            err = self._composition_error(overrides)
            if err is not None:
                reason = config_error_sentence(err)
                if self._composition_error(fixed) is not None:
                    studies.retry_interrupted(study, numbers, "the config stopped composing")
                    raise GanError(f"no trial can start, because the config itself no longer composes ({reason.rstrip('.')}); "
                                   f"fix it and run the same command again, which continues the study with these trials' parameters.") from err
                log.error("trial %d failed before it started: %s", number, reason)
                studies.fail_trial(study, number, reason)
                continue
            kept[0].append(overrides)
            kept[1].append(number)
        return kept

    def _composition_error(self, overrides: List[str]) -> Optional[BaseException]:
        """What Hydra or OmegaConf raises composing ``overrides``, or None when they compose."""
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            self.validate_batch_is_legal([overrides])
        except (HydraException, OmegaConfBaseException) as err:
            return err
        return None

    def _launch(self, batch: List[List[str]], numbers: List[int]) -> List[Any]:
        """Launch the batch so that each job's number (and folder) is its trial's number."""
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return list(self.launcher.launch(batch, initial_job_idx=numbers[0]))
        return [r for overrides, number in zip(batch, numbers) for r in self.launcher.launch([overrides], initial_job_idx=number)]


_ABSENT = object()
