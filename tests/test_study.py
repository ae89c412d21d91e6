"""The Optuna study sweeper (hydra/sweeper=optuna): its search space, its study in a storage, a trial's pruning
inside the loop, and whole studies run as a user runs them (resumed, and shared by two processes)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from omegaconf import OmegaConf

from gan.errors import GanError
from gan.hooks import Stop
from gan.rundir import read_status
from gan.study import (
    Parameter,
    Pruned,
    TrialReport,
    open_study,
    override_value,
    retry_interrupted,
    retry_stale,
    search_space,
    settings_from,
    trials_done,
)
from helpers.runs import EVALUATED, QUICK_OVERRIDES, compose_config, run_script, start_script

KNOWN = {"optim.lr", "seed", "train.r1_gamma", "model"}


def known(key):
    return key in KNOWN


def settings(tmp_path, **changes):
    node = OmegaConf.create({"objective": "ema.fid", "direction": None, "sampler": "tpe", "pruner": "median",
                             "storage": None, "study_name": "s", "seed": 0, **changes})
    return settings_from(node, tmp_path)


def test_the_search_space_reads_hydras_grammar():
    parameters, fixed = search_space(["optim.lr=tag(log, interval(0.00005, 0.001))", "train.r1_gamma=choice(0.5,1,2)", "seed=range(0,3)",
                                      "model=small,large", "epochs=5", "+train.extra=1,2"], known)
    by_key = {p.key: p.distribution for p in parameters}
    assert by_key["optim.lr"] == optuna.distributions.FloatDistribution(5e-5, 1e-3, log=True)
    assert by_key["train.r1_gamma"] == optuna.distributions.CategoricalDistribution([0.5, 1, 2])
    assert by_key["seed"] == optuna.distributions.IntDistribution(0, 2)
    assert by_key["model"] == optuna.distributions.CategoricalDistribution(["small", "large"])
    assert "+train.extra" in by_key and fixed == ["epochs=5"]


@pytest.mark.parametrize("line, words", [
    ("optim.lrr=interval(0.1, 0.2)", "optim.lrr in the search space is not a config key"),
    ("optim.lr=interval(0.001, 0.0001)", "is an empty range"),
    ("optim.lr=tag(log, interval(0, 0.1))", "start > 0 on a log scale"),
    ("seed=range(3,3)", "is an empty range"),
    ("optim.lr=interval(0.1", "cannot read the search space"),
])
def test_a_bad_search_space_is_one_sentence(line, words):
    with pytest.raises(GanError, match=words):
        search_space([line], known)


def test_nothing_to_search_is_said():
    with pytest.raises(GanError, match="nothing to search"):
        search_space(["epochs=5"], known)


@pytest.mark.parametrize("value", [0.00012345678901234, 3, "large", True, "a b'c"])
def test_sampled_values_reach_the_job_unchanged(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([f"key={override_value(value)}"])[0].value()
    assert parsed == value and type(parsed) is type(value)


def test_the_objective_must_be_a_value_evaluations_produce(tmp_path):
    assert settings(tmp_path).direction == "minimize" and settings(tmp_path).metric == "fid"
    assert settings(tmp_path, objective="ema.recall").direction == "maximize"
    assert settings(tmp_path, objective="raw.fid").metric == "raw_fid"
    assert settings(tmp_path).storage == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    with pytest.raises(GanError, match="hydra.sweeper.objective=ema.fdi is not a value the evaluations produce"):
        settings(tmp_path, objective="ema.fdi")
    with pytest.raises(GanError, match="hydra.sweeper.pruner=asha is not an option"):
        settings(tmp_path, pruner="asha")


def lr_space():
    return [Parameter("optim.lr", optuna.distributions.FloatDistribution(5e-5, 1e-3, log=True))]


def test_a_study_continues_only_with_its_direction_and_space(tmp_path):
    study = open_study(settings(tmp_path), lr_space(), [])
    study.tell(study.ask({"optim.lr": lr_space()[0].distribution}), 10.0)
    again = open_study(settings(tmp_path), lr_space(), [])
    assert len(again.trials) == 1
    with pytest.raises(GanError, match="was started to minimize its objective, not maximize"):
        open_study(settings(tmp_path, direction="maximize"), lr_space(), [])
    other = [Parameter("optim.lr", optuna.distributions.FloatDistribution(1e-4, 1e-3))]
    with pytest.raises(GanError, match="was started with another search space"):
        open_study(settings(tmp_path), other, [])
    assert len(open_study(settings(tmp_path), lr_space(), []).trials) == 1, "the refused launches changed nothing"


def test_a_storage_that_cannot_be_opened_is_one_sentence(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(GanError, match="cannot open the study's storage"):
        open_study(settings(tmp_path, storage=f"sqlite:///{tmp_path}/file/sub/optuna.db"), lr_space(), [])
    with pytest.raises(GanError, match="cannot open the study's storage"):
        open_study(settings(tmp_path, storage="nosuchdb://x"), lr_space(), [])


def test_a_sweep_that_loses_the_race_to_create_a_new_database_opens_it(tmp_path, monkeypatch):
    calls = []

    class Racing(optuna.storages.RDBStorage):
        def __init__(self, url, **options):
            calls.append(url)
            if len(calls) == 1:  # what SQLite says when another process created the tables a moment before
                raise RuntimeError("(sqlite3.OperationalError) table studies already exists")
            super().__init__(url, **options)

    monkeypatch.setattr(optuna.storages, "RDBStorage", Racing)
    monkeypatch.setattr("gan.study.time.sleep", lambda seconds: None)
    study = open_study(settings(tmp_path), lr_space(), [])
    assert len(calls) == 2 and study.study_name == "s"


def test_an_interrupted_trial_runs_again_and_is_not_counted_twice(tmp_path, monkeypatch):
    study = open_study(settings(tmp_path), lr_space(), [])
    distributions = {"optim.lr": lr_space()[0].distribution}
    study.tell(study.ask(distributions), 5.0)
    running = study.ask(distributions)
    retry_interrupted(study, [running.number], "the sweep stopped")
    assert study.trials[running.number].state == optuna.trial.TrialState.FAIL
    assert trials_done(study) == 1, "the interrupted trial does not count"
    again = study.ask(distributions)
    assert again.params == running.params and again.user_attrs["retry_of"] == running.number


def sweeper_composing(accepts):
    """The plugin's sweeper whose composition accepts the override lists ``accepts`` says yes to."""
    from hydra.errors import ConfigCompositionException

    from hydra_plugins.gan_optuna_sweeper.optuna_sweeper import OptunaSweeper

    def validate(batch):
        if not accepts(batch[0]):
            raise ConfigCompositionException("In 'train/default': ConfigKeyError raised while composing config:")

    sweeper = OptunaSweeper.__new__(OptunaSweeper)
    sweeper.validate_batch_is_legal = validate
    return sweeper


def test_a_trial_whose_values_do_not_compose_fails_and_a_config_that_never_composes_stops_the_sweep(tmp_path):
    study = open_study(settings(tmp_path), lr_space(), [])
    distributions = {"optim.lr": lr_space()[0].distribution}
    trials = [study.ask(distributions) for _ in range(2)]
    batch = [["+sweep=x", "optim.lr=bad"], ["+sweep=x", "optim.lr=0.0002"]]
    numbers = [t.number for t in trials]
    kept = sweeper_composing(lambda overrides: "optim.lr=bad" not in overrides)._composable(study, batch, numbers, ["+sweep=x"])
    assert kept == ([batch[1]], [numbers[1]]), "the trial with a value the config refuses is left out, the other runs"
    assert study.trials[numbers[0]].state == optuna.trial.TrialState.FAIL and trials_done(study) == 1

    # A file of conf/ changed under the sweep: nothing composes, whatever the trial's values.
    waiting = [study.ask(distributions) for _ in range(2)]
    with pytest.raises(GanError, match=r"no trial can start, because the config itself no longer composes \(.*\); fix it and run the same"):
        sweeper_composing(lambda overrides: False)._composable(study, [["+sweep=x", f"optim.lr={t.params['optim.lr']}"] for t in waiting],
                                                            [t.number for t in waiting], ["+sweep=x"])
    assert trials_done(study) == 1, "the trials the broken config met do not count towards n_trials"
    again = [study.ask(distributions) for _ in range(2)]
    assert [t.params for t in again] == [t.params for t in waiting], "their parameters run first when the study continues"


def test_a_trial_of_a_sweep_that_died_is_found_by_its_missing_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr("gan.study.HEARTBEAT_S", 1)
    monkeypatch.setattr("gan.study.GRACE_S", 1)
    study = open_study(settings(tmp_path), lr_space(), [])
    orphan = study.ask({"optim.lr": lr_space()[0].distribution})
    study._storage.record_heartbeat(orphan._trial_id)
    import time

    time.sleep(2.5)
    retry_stale(study)
    assert study.trials[orphan.number].state == optuna.trial.TrialState.FAIL
    assert study.trials[-1].state == optuna.trial.TrialState.WAITING and study.trials[-1].params == {}  # queued with its parameters
    assert study.ask({"optim.lr": lr_space()[0].distribution}).params == orphan.params


def run_view(epoch, epochs=10):
    logged = []
    tracker = SimpleNamespace(log=lambda values, step: logged.append(values))
    return SimpleNamespace(epoch=epoch, step=epoch * 10, final=epoch == epochs, tracker=tracker), logged


def test_a_trial_that_trails_the_others_is_pruned_and_says_against_what(tmp_path):
    st = settings(tmp_path)
    study = open_study(st, lr_space(), [])
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    distributions = {"optim.lr": lr_space()[0].distribution}
    for fids in ([100.0, 50.0], [120.0, 60.0]):
        trial = study.ask(distributions)
        for epoch, fid in enumerate(fids, 1):
            trial.report(fid, epoch)
        study.tell(trial, fids[-1])
    report = TrialReport(study.ask(distributions), st)
    view, logged = run_view(1)
    assert report(view, {"fid": 105.0}) is None, "between the two others: goes on"
    view, logged = run_view(2)
    record = {"fid": 80.0}
    stop = report(view, record)
    assert stop == Stop("pruned", "pruned at epoch 2: ema.fid 80, against the other 2 trials' best 50 and median 55 there; "
                                  "the median pruner goes on with the trials at least as good as the others' median there")
    assert record["pruned_at"] == 2 and logged == [{"trial_pruned_at": 2}]
    report.finish({"fid": 80.0})
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED


def test_a_pruned_trial_names_the_rule_of_its_pruner():
    # Successive halving (the default) keeps the best quarter, at least one: a value better than the median is pruned too.
    pruned = Pruned(5, 117.3, [139.4, 112.5, 123.7], "ema.fid", pruner="successive_halving")
    assert pruned.describe() == ("pruned at epoch 5: ema.fid 117.3, against the other 3 trials' best 112.5 and median 123.7 there; "
                                 "successive halving goes on with the best 1 of the 4 trials at that epoch")
    assert "best 2 of the 8 trials" in Pruned(5, 1.0, [0.5] * 7, "ema.fid").describe()
    assert Pruned(5, 0.2, [0.4, 0.6], "ema.recall", minimize=False, pruner="hyperband").describe().startswith(
        "pruned at epoch 5: ema.recall 0.2, against the other 2 trials' best 0.6 and median 0.5 there; hyperband")


def test_a_trial_ends_complete_with_its_objective_or_failed_with_why(tmp_path):
    st = settings(tmp_path)
    study = open_study(st, lr_space(), [])
    distributions = {"optim.lr": lr_space()[0].distribution}
    done = TrialReport(study.ask(distributions), st)
    done.finish({"fid": 12.5, "recall": 0.5})
    failed = TrialReport(study.ask(distributions), st)
    failed.finish(None, error="a NaN loss at step 3")
    silent = TrialReport(study.ask(distributions), st)
    silent.finish({"d_loss": 0.1})
    trials = study.trials
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and trials[0].value == 12.5
    assert trials[1].state == optuna.trial.TrialState.FAIL and trials[1].system_attrs["fail_reason"] == "a NaN loss at step 3"
    assert "without a finite ema.fid" in trials[2].system_attrs["fail_reason"]


def test_the_preset_is_an_optuna_study_of_the_learning_rate():
    cfg = compose_config("+sweep=lr_search", hydra=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.params["optim.lr"] == "tag(log, interval(0.00005, 0.001))"
    assert cfg.hydra.sweeper.pruner == "successive_halving" and cfg.hydra.sweeper.sampler == "tpe"
    assert cfg.hydra.sweeper.n_trials == 8 and cfg.eval.every == 5


# -- whole studies, as a user runs them -----------------------------------------------------------------
STUDY = ("-m", "hydra/sweeper=optuna", *QUICK_OVERRIDES, *EVALUATED, "epochs=3")


def study_trials(sweep_dir: Path, storage: str | None = None):
    return optuna.load_study(study_name=None if storage else sweep_dir.name, storage=storage or f"sqlite:///{sweep_dir / 'optuna.db'}").trials


def run_study(data_root, sweep_dir, *args, expect=0):
    result = run_script("train.py", *STUDY, f"hydra.sweep.dir={sweep_dir}", *args, data_root=data_root, timeout=600)
    assert result.returncode == expect, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_a_study_prunes_trials_records_each_in_its_folder_and_continues(tiny_mnist, tmp_path):
    sweep_dir = tmp_path / "study"
    # Successive halving ranks a trial against those before it from the second trial on: of four, unless each
    # evaluates better than all before it (fp32 keeps these tiny runs the same on every CPU), some are pruned.
    args = ("optim.lr=choice(0.0002,0.0005,0.5,0.9)", "train.precision=fp32", "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=4",
            "hydra.sweeper.seed=0")
    run_study(tiny_mnist, sweep_dir, *args)
    trials = study_trials(sweep_dir)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    for trial in trials:
        job = sweep_dir / str(trial.number)
        record = json.loads((job / ".hydra" / "trial.json").read_text())
        assert record["trial"] == trial.number and record["params"] == trial.params
        status = read_status(job)
        if trial.state == optuna.trial.TrialState.PRUNED:
            epoch = max(trial.intermediate_values)
            assert status.status == "pruned" and status.epoch == epoch < 3 and status.reason.startswith(f"pruned at epoch {epoch}: ema.fid")
            assert (job / "checkpoints" / "last.pt").is_file() and not (job / "eval.json").exists()
        else:
            assert status.status == "finished"
            assert trial.value == pytest.approx(json.loads((job / "eval.json").read_text())["ema"]["fid"])
    assert json.loads((sweep_dir / "study.json").read_text())["objective"] == "ema.fid"

    # report.py on the study folder: every trial, the best one's checkpoint, the epochs saved by pruning.
    report = run_script("report.py", str(sweep_dir))
    assert report.returncode == 0, report.stderr
    trained = sum(read_status(sweep_dir / str(t.number)).epoch for t in trials)
    assert trained < 12 and f"Epochs trained: {trained} of the 12 that 4 trials of 3 epochs would cost" in report.stdout
    best = min((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    assert f"Best: trial {best.number} " in report.stdout and str(sweep_dir / str(best.number) / "checkpoints" / "last.pt") in report.stdout
    assert report.stdout.count("| pruned |") == sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    assert (sweep_dir / "summary.png").is_file() and (sweep_dir / "summary.csv").is_file()

    # The same command again with more trials continues the study: nothing is run twice.
    run_study(tiny_mnist, sweep_dir, *args)
    assert len(study_trials(sweep_dir)) == 4, "a finished study runs no trial again"
    # Another search space on the same study is refused, and the study is as it was.
    result = run_study(tiny_mnist, sweep_dir, "optim.lr=choice(0.001,0.002)", "hydra.sweeper.sampler=grid", expect=1)
    assert result.stderr.strip().splitlines()[-1].startswith("error: the study study in sqlite:///") and "another search space" in result.stderr
    assert len(study_trials(sweep_dir)) == 4


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_study_goes_on(tiny_mnist, tmp_path):
    sweep_dir = tmp_path / "study"
    # model.latent_dim=0 composes (a whole number) but the config's checks refuse it: that trial fails, the other runs.
    result = run_study(tiny_mnist, sweep_dir, "optim.lr=0.0002", "model.latent_dim=choice(0,64)", "hydra.sweeper.sampler=grid",
                       "hydra.sweeper.n_trials=2", expect=1)
    trials = study_trials(sweep_dir)
    states = {t.params["model.latent_dim"]: t.state for t in trials}
    assert states == {0: optuna.trial.TrialState.FAIL, 64: optuna.trial.TrialState.COMPLETE}
    failed = next(t for t in trials if t.state == optuna.trial.TrialState.FAIL)
    assert "model.latent_dim must be positive" in failed.system_attrs["fail_reason"]
    assert "1 job(s) of this sweep failed" in result.stderr


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tiny_mnist, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    args = [*STUDY, "optim.lr=tag(log, interval(0.0001, 0.001))", "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage='{storage}'",
            "hydra.sweeper.study_name=shared", "hydra.sweeper.pruner=none"]
    workers = [start_script("train.py", *args, f"hydra.sweep.dir={tmp_path / name}", data_root=tiny_mnist) for name in ("a", "b")]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert len(trials) >= 4 and len({t.number for t in trials}) == len(trials)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    folders = {int(p.name) for name in ("a", "b") for p in (tmp_path / name).iterdir() if p.name.isdigit()}
    assert folders == {t.number for t in trials}, "each trial ran once, in the folder of its number"
    with sqlite3.connect(tmp_path / "shared.db") as db:
        assert db.execute("select count(*) from trials where state = 'RUNNING'").fetchone() == (0,)
