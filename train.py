"""Train the MNIST GAN: python train.py [overrides], e.g. python train.py optim.lr=0.0001 epochs=100."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from gan.config import to_config
from gan.errors import exit_on_user_error
from gan.trainer import train


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # W&B names: the overrides that make this run different; the sweep directory groups a multirun's jobs.
    name = hydra_cfg.job.override_dirname or "defaults"
    group = str(run_dir.parent) if hydra_cfg.mode == RunMode.MULTIRUN else None
    with exit_on_user_error():
        final = train(to_config(cfg), run_dir, run_name=name, run_group=group)
    # The final FID (EMA) is the value optimizing sweepers such as Optuna minimize.
    return final.get("fid")


if __name__ == "__main__":
    main()
