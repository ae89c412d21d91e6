"""Train the MNIST GAN: python train.py [overrides], e.g. python train.py optim.lr=0.0001 epochs=100."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gan.config import to_config
from gan.errors import exit_on_user_error
from gan.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        final = train(to_config(cfg), Path(HydraConfig.get().runtime.output_dir))
    # Returned so Hydra sweepers that optimize (e.g. Optuna) have a value to rank runs by.
    return final.get("g_loss")


if __name__ == "__main__":
    main()
