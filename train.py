"""Train the MNIST GAN: python train.py [overrides], e.g. python train.py optim.lr=0.0001 epochs=100.

The recipe is in conf/ (print it with `python train.py --cfg job`); what a job does is gan/launch.py.
"""

import hydra
from omegaconf import DictConfig

from gan.launch import launch


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return launch(cfg)


if __name__ == "__main__":
    main()
