"""An Optuna study run as a Hydra sweep (``hydra/sweeper=optuna``): the search space read from Hydra's override
grammar, the study in a storage that every trial's process reaches, and the epoch hook through which a
trial reports its evaluations and is pruned.

The sweeper (hydra_plugins/gan_optuna_sweeper) asks the study for trials and launches each as a Hydra job,
handing it the study's storage URL, name and trial number under ``hydra.sweeper``. The job (gan/launch.py)
opens the same study with :func:`open_trial`, reports each evaluation through :class:`TrialReport`, and tells
the study how the trial ended: complete with its objective, pruned, or failed. The sweeper fails a trial whose
job ended without a word, and heartbeats its running trials so that the next sweeper on the same study can
tell a trial of a dead sweep from one that is still running (docs/architecture.md, "Sweeps").
"""

from __future__ import annotations

import logging
import math
import statistics
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gan.columns import HIGHER_IS_BETTER, METRICS
from gan.errors import GanError

log = logging.getLogger(__name__)
# The sweeper beats the trials' hearts itself (:func:`heartbeats`), where Optuna expects Study.optimize to.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

STUDY_FILE = "study.json"  # in the sweep folder: what report.py needs to open the study
TRIAL_FILE = "trial.json"  # in each trial's launch record (.hydra/): its study, number and parameters
DEFAULT_STORAGE = "optuna.db"  # a SQLite file in the sweep folder
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("successive_halving", "median", "hyperband", "none")
HEARTBEAT_S = 30  # how often the sweeper marks its running trials alive
GRACE_S = 120  # a running trial without a heartbeat for this long belongs to a sweep that died
SQLITE_TIMEOUT_S = 60  # trials in several processes wait this long for SQLite's write lock
CREATE_RACE_TRIES = 5  # tries to open a new database that another sweep is creating at the same moment


@dataclass(frozen=True)
class StudySettings:
    """The parts of ``hydra.sweeper`` that the sweeper and every trial read alike."""

    storage: str
    study_name: str
    objective: str  # an eval.json key: ema.fid, raw.recall, ...
    direction: str  # minimize | maximize
    pruner: str
    sampler: str
    seed: int | None

    @property
    def metric(self) -> str:
        """The epoch record's column for the objective (ema.fid -> fid, raw.fid -> raw_fid)."""
        generator, name = self.objective.split(".", 1)
        return name if generator == "ema" else f"raw_{name}"


def settings_from(sweeper: Any, sweep_dir: Path) -> StudySettings:
    """Check and complete the ``hydra.sweeper`` node: the objective an evaluation produces, its direction, a storage URL."""
    objective = str(sweeper.objective)
    generator, _, name = objective.partition(".")
    if generator not in ("ema", "raw") or name not in METRICS:
        known = ", ".join(f"ema.{m}" for m in METRICS)
        raise GanError(f"hydra.sweeper.objective={objective} is not a value the evaluations produce; choose one of {known} "
                       f"(or raw.<name> for G without EMA).")
    direction = sweeper.direction or ("maximize" if name in HIGHER_IS_BETTER else "minimize")
    if direction not in ("minimize", "maximize"):
        raise GanError(f"hydra.sweeper.direction={direction} is not a direction; write minimize or maximize.")
    for key, value, known in (("sampler", sweeper.sampler, SAMPLERS), ("pruner", sweeper.pruner, PRUNERS)):
        if value not in known:
            raise GanError(f"hydra.sweeper.{key}={value} is not an option; choose one of {', '.join(known)}.")
    storage = sweeper.storage or f"sqlite:///{(sweep_dir / DEFAULT_STORAGE).resolve()}"
    study_name = sweeper.study_name or sweep_dir.name
    return StudySettings(str(storage), str(study_name), objective, direction, str(sweeper.pruner), str(sweeper.sampler), sweeper.seed)


# -- the search space -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Parameter:
    """One searched key: how it is written on the command line (``+x`` adds a key) and its Optuna distribution."""

    key: str  # as overridden: optim.lr, +train.extra
    distribution: Any  # optuna.distributions.BaseDistribution

    @property
    def name(self) -> str:
        return self.key.lstrip("+~")


def search_space(lines: list[str], known: Any) -> tuple[list[Parameter], list[str]]:
    """The searched parameters among override ``lines`` (choice, a,b, range, interval, tag(log, ...)) and the fixed overrides.

    ``known(key)`` says whether a key exists in the composed config (or is a config group); a searched key
    that does not, without ``+``, is refused, as is a range with no value in it.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    try:
        overrides = OverridesParser.create().parse_overrides(lines)
    except Exception as err:  # Hydra's grammar error names the bad line
        raise GanError(f"cannot read the search space ({str(err).splitlines()[0]}); write each entry as key=choice(a,b), "
                       f"key=range(0,3) or key=tag(log, interval(0.00005, 0.001)).") from None
    parameters, fixed = [], []
    for override in overrides:
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        key = override.get_key_element()
        name = key.lstrip("+~")
        if not override.is_add() and not known(name):
            raise GanError(f"{name} in the search space is not a config key or group; check its spelling "
                           f"(`python train.py --cfg job` lists them), or write +{name} to add a new key.")
        sweep = override.value()
        if override.is_interval_sweep():
            low, high = float(sweep.start), float(sweep.end)
            log_scale = "log" in sweep.tags
            if not low < high or (log_scale and low <= 0):
                raise GanError(f"{override.input_line} is an empty range: an interval needs start < end"
                               f"{' and start > 0 on a log scale' if log_scale else ''}.")
            distribution = FloatDistribution(low, high, log=log_scale)
        else:
            values = list(override.sweep_iterator())
            if not values:
                raise GanError(f"{override.input_line} is an empty range: it has no value to try.")
            if any(isinstance(v, (list, dict)) for v in values):
                raise GanError(f"{override.input_line}: the search space takes numbers, strings or group options, not lists.")
            if override.is_range_sweep() and all(isinstance(v, int) for v in values) and len(values) > 1:
                distribution = IntDistribution(values[0], values[-1], step=values[1] - values[0])
            else:
                distribution = CategoricalDistribution(values)
        parameters.append(Parameter(key, distribution))
    if not parameters:
        raise GanError("the study has nothing to search: give hydra.sweeper.params (or +sweep=lr_search) or a key "
                       "such as optim.lr='tag(log, interval(0.00005, 0.001))' on the command line.")
    return parameters, fixed


def grid_of(parameters: list[Parameter]) -> dict[str, list[Any]]:
    """The values of a grid search; an interval has none (the grid sampler needs choice() or range())."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    grid = {}
    for parameter in parameters:
        d = parameter.distribution
        if isinstance(d, CategoricalDistribution):
            grid[parameter.name] = list(d.choices)
        elif isinstance(d, IntDistribution):
            grid[parameter.name] = list(range(d.low, d.high + 1, d.step))
        else:
            raise GanError(f"hydra.sweeper.sampler=grid needs values to list, and {parameter.name} is an interval; "
                           f"write it as choice(...) or range(...), or use sampler=tpe or random.")
    return grid


def space_record(parameters: list[Parameter]) -> dict[str, str]:
    """The search space as the study keeps it (to refuse a second sweep with another space on the same study)."""
    from optuna.distributions import distribution_to_json

    return {p.key: distribution_to_json(p.distribution) for p in parameters}


def override_value(value: Any) -> str:
    """A sampled value as Hydra's override grammar reads it back unchanged."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and not value.replace("_", "").replace("-", "").replace(".", "").isalnum():
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value).lower() if isinstance(value, bool) else str(value)


# -- the study in its storage ----------------------------------------------------------------------------
def open_storage(url: str) -> Any:
    """The study's storage (heartbeats on, SQLite waiting for the write lock), or one sentence if it cannot be opened."""
    import optuna

    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    for attempt in range(CREATE_RACE_TRIES):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9, unchanged since
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
        except Exception as err:  # SQLAlchemy's errors for a bad URL, a missing driver or an unwritable file
            # Sweeps started together on a new database race to create its tables: the loser finds them made.
            if "already exists" in str(err) and attempt + 1 < CREATE_RACE_TRIES:
                time.sleep(0.5 * (attempt + 1))
                continue
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise GanError(f"cannot open the study's storage {url} ({reason}); give hydra.sweeper.storage a database URL "
                           f"Optuna takes (sqlite:///path/study.db in a writable folder, postgresql://user@host/db).") from None
    raise AssertionError("the last try returns or raises")


def build_sampler(settings: StudySettings, parameters: list[Parameter]) -> Any:
    import optuna

    if settings.sampler == "grid":
        return optuna.samplers.GridSampler(grid_of(parameters), seed=settings.seed)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    return optuna.samplers.TPESampler(seed=settings.seed)


def build_pruner(settings: StudySettings) -> Any:
    """The pruner, built alike by the sweeper and by each trial (Optuna keeps pruners out of the storage)."""
    import optuna

    return {"successive_halving": optuna.pruners.SuccessiveHalvingPruner,
            "median": optuna.pruners.MedianPruner,
            "hyperband": optuna.pruners.HyperbandPruner,
            "none": optuna.pruners.NopPruner}[settings.pruner]()


def open_study(settings: StudySettings, parameters: list[Parameter], fixed: list[str]) -> Any:
    """Create the study, or continue it when its storage holds it with the same direction and search space."""
    import optuna

    storage = open_storage(settings.storage)
    space = space_record(parameters)
    try:
        study_id = storage.get_study_id_from_name(settings.study_name)
    except KeyError:
        study_id = None
    if study_id is not None:
        directions = [d.name.lower() for d in storage.get_study_directions(study_id)]
        if directions != [settings.direction]:
            raise GanError(f"the study {settings.study_name} in {settings.storage} was started to {directions[0]} its objective, "
                           f"not {settings.direction}; give a new hydra.sweeper.study_name (or the same direction).")
        attrs = storage.get_study_user_attrs(study_id)
        for attr, now in (("search_space", space), ("objective", settings.objective)):
            if attr in attrs and attrs[attr] != now:
                raise GanError(f"the study {settings.study_name} in {settings.storage} was started with another {attr.replace('_', ' ')} "
                               f"({attrs[attr]}); give a new hydra.sweeper.study_name to search this one.")
    study = optuna.create_study(storage=storage, study_name=settings.study_name, direction=settings.direction,
                                sampler=build_sampler(settings, parameters), pruner=build_pruner(settings), load_if_exists=True)
    if study_id is None:
        study.set_user_attr("search_space", space)
        study.set_user_attr("objective", settings.objective)
        study.set_user_attr("fixed_overrides", fixed)
    return study


def trials_done(study: Any) -> int:
    """Trials that count towards n_trials: complete, pruned or failed, except a failure that is being tried again."""
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return sum(1 for t in trials if t.state in finished and t.number not in retried)


def retry_interrupted(study: Any, numbers: list[int], reason: str) -> None:
    """Fail the still-running trials ``numbers`` (their sweep stopped) and queue their parameters to run again from scratch."""
    import optuna

    for trial in study.get_trials(deepcopy=False):
        if trial.number in numbers and trial.state == optuna.trial.TrialState.RUNNING:
            fail_trial(study, trial.number, f"interrupted: {reason}")
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
            log.warning("trial %d was running when %s: failed, and queued to run again with the same parameters", trial.number, reason)


def retry_stale(study: Any) -> None:
    """Trials that a sweep which died left running (no heartbeat for GRACE_S) are failed and queued again."""
    import optuna

    storage = study._storage
    stale = storage._get_stale_trial_ids(study._study_id)
    numbers = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)) if t._trial_id in stale]
    retry_interrupted(study, numbers, f"its sweep stopped (no heartbeat for {GRACE_S} s)")


def fail_trial(study: Any, number: int, reason: str) -> None:
    """Record trial ``number`` as failed, with why (shown by report.py)."""
    import optuna

    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    study._storage.set_trial_system_attr(trial_id, "fail_reason", reason)
    study.tell(number, state=optuna.trial.TrialState.FAIL)


def fail_silent(study: Any, numbers: list[int]) -> None:
    """Fail the trials ``numbers`` whose jobs ended without telling the study (a job killed, or refused before it started)."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.number in numbers:
            fail_trial(study, trial.number, "its job ended without telling the study (see the job's train.log)")


def log_best(study: Any, sweep_dir: Path) -> None:
    """Say the best trial, its value, parameters and folder."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        log.warning("no trial of the study %s completed; `python report.py %s` says why", study.study_name, sweep_dir)
        return
    best = study.best_trial
    log.info("best trial %d: %s %.4g with %s (%s); `python report.py %s` lists every trial", best.number,
             study.user_attrs.get("objective", "objective"), best.value, best.params, sweep_dir / str(best.number), sweep_dir)


@contextmanager
def heartbeats(study: Any, numbers: list[int]) -> Iterator[None]:
    """Mark the trials ``numbers`` alive every HEARTBEAT_S while their jobs run."""
    import threading

    storage = study._storage
    ids = [t._trial_id for t in study.get_trials(deepcopy=False) if t.number in numbers]
    done = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in ids:
                try:
                    storage.record_heartbeat(trial_id)
                except Exception as err:  # a busy database: the next beat tries again
                    log.debug("heartbeat of trial %s failed: %s", trial_id, err)
            if done.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


# -- a trial, inside its job -----------------------------------------------------------------------------
@dataclass
class Pruned:
    """A trial the pruner stopped: its epoch, its value, the other trials' values there and the pruner's rule."""

    epoch: int
    value: float
    others: list[float]
    metric: str
    minimize: bool = True
    pruner: str = "successive_halving"

    def rule(self) -> str:
        """Why a value like this one stops, in the pruner's own terms (Optuna's defaults, as build_pruner makes them)."""
        trials = len(self.others) + 1
        return {"successive_halving": f"successive halving goes on with the best {max(1, trials // 4)} of the {trials} trials at that epoch",
                "median": "the median pruner goes on with the trials at least as good as the others' median there",
                "hyperband": "hyperband goes on with the best trials of each of its brackets"}.get(self.pruner, f"the {self.pruner} pruner said so")

    def describe(self) -> str:
        if not self.others:
            return f"pruned at epoch {self.epoch}: {self.metric} {self.value:.4g}; {self.rule()}"
        best = min(self.others) if self.minimize else max(self.others)
        return (f"pruned at epoch {self.epoch}: {self.metric} {self.value:.4g}, against the other {len(self.others)} trials' best "
                f"{best:.4g} and median {statistics.median(self.others):.4g} there; {self.rule()}")


class TrialReport:
    """The epoch hook of a trial: each evaluation is the trial's intermediate value at that epoch; when the pruner
    says so, the run stops there (its checkpoints kept) and the trial is pruned."""

    def __init__(self, trial: Any, settings: StudySettings) -> None:
        self.trial, self.settings = trial, settings
        self.pruned: Pruned | None = None

    @property
    def number(self) -> int:
        return int(self.trial.number)

    def __call__(self, run: Any, record: dict[str, Any]) -> Any:
        from gan.hooks import Stop

        value = record.get(self.settings.metric)
        if value is None or run.final:
            return None
        if not math.isfinite(value):
            return None  # the run's own nonfinite check ends it
        self.trial.report(float(value), run.epoch)
        if not self.trial.should_prune():
            return None
        self.pruned = Pruned(run.epoch, float(value), self._others_at(run.epoch), self.settings.objective,
                             minimize=self.settings.direction == "minimize", pruner=self.settings.pruner)
        record["pruned_at"] = run.epoch
        run.tracker.log({"trial_pruned_at": run.epoch}, run.step)
        log.info("trial %d %s", self.number, self.pruned.describe())
        return Stop("pruned", self.pruned.describe())

    def _others_at(self, epoch: int) -> list[float]:
        return [t.intermediate_values[epoch] for t in self.trial.study.get_trials(deepcopy=False)
                if t.number != self.number and epoch in t.intermediate_values]

    def finish(self, final: dict[str, Any] | None, error: str | None = None) -> None:
        """Tell the study how the trial ended: pruned, complete with its objective from the final evaluation, or failed."""
        import optuna

        study, state = self.trial.study, optuna.trial.TrialState
        if error is None and self.pruned is not None:
            study.tell(self.number, state=state.PRUNED)
            return
        value = (final or {}).get(self.settings.metric)
        if error is None and value is not None and math.isfinite(value):
            study.tell(self.number, float(value))
            return
        fail_trial(study, self.number, error or f"the run ended without a finite {self.settings.objective}")


def open_trial(sweeper: Any) -> TrialReport | None:
    """The trial a job runs (from the ``hydra.sweeper`` node the sweeper filled in), or None outside a study."""
    trial_number = sweeper.get("trial") if sweeper is not None else None
    if trial_number is None:
        return None
    import optuna

    settings = settings_from(sweeper, Path("."))
    storage = open_storage(settings.storage)
    study = optuna.load_study(study_name=settings.study_name, storage=storage, pruner=build_pruner(settings))
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, int(trial_number))
    return TrialReport(optuna.trial.Trial(study, trial_id), settings)
