"""Train the MNIST GAN: python train.py [overrides], e.g. python train.py optim.lr=0.0001 epochs=100.

The recipe is in conf/ (print it with `python train.py --cfg job`); what a job does is gan/launch.py.
"""

from gan.cli import quiet_ctrl_c, run_app

quiet_ctrl_c()  # a Ctrl-C while the imports below load ends with one line, not a traceback

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import gan.config  # noqa: E402,F401  (registers the typed schemas the YAML files name)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from gan.launch import launch  # torch loads here, inside run_app's handling of a Ctrl-C

    return launch(cfg)


if __name__ == "__main__":
    run_app(main)
