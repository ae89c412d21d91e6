"""Train the MNIST GAN: python train.py [overrides], e.g. python train.py optim.lr=0.0001 epochs=100."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

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
    excluded = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    keys = [o.split("=", 1)[0].lstrip("+~") for o in hydra_cfg.overrides.task if "=" in o]
    # A group choice (model=large) is recorded by its name; a value (optim.lr=0.0001) as composed.
    values = {k: hydra_cfg.runtime.choices.get(k) or OmegaConf.select(cfg, k) for k in keys if k not in excluded}
    swept = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in values.items()}
    with exit_on_user_error():
        final = train(to_config(cfg), run_dir, run_name=name, run_group=group, swept=swept)
    # The final FID (EMA) is the value optimizing sweepers such as Optuna minimize.
    return final.get("fid")


if __name__ == "__main__":
    main()
