"""hydra/sweeper=optuna: an Optuna study as a Hydra sweeper, with trials pruned on the built-in evaluator (gan/study.py)."""
