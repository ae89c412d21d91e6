"""A paired screen of a recipe change: resume a run's checkpoint with changed values, train to its last epoch, score G-EMA.

    python tools/screen.py CHECKPOINT [OVERRIDES ...] [--ema 0.998,0.9995] [--data-root ../shared/data]

Resuming is exact, so a screen from a run's epoch_030.pt with no overrides ends with that run's own
weights, and a screen with one override differs from the run by that change alone from epoch 30 on: a
comparison free of seed-to-seed spread, though only of the late phase. ``--ema`` also tracks extra
G-EMAs at other decays over the same G (the EMA never feeds back into training); each starts from the
checkpoint's average and forgets it as decay**steps (0.9995 over 10 epochs of 937 steps: under 1%).
OVERRIDES are dotted keys as train.py takes them, e.g. train.r1_gamma=4, applied to the run's own config
(the one stored in its checkpoint), so a screen changes nothing else even when conf/'s defaults have moved.
Prints one line per generator scored (10k samples, the evaluation seed of training).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gan.checkpoint import load_checkpoint
from gan.columns import DIGITS
from gan.config import Config, to_config
from gan.evaluator import Evaluator
from gan.step import GanStep, ema_weight, update_ema
from gan.trainer import Trainer


class StepWithExtraEmas:
    """The run's GanStep, also moving extra averages of G after every step."""

    def __init__(self, step: GanStep, emas: dict[float, Any]) -> None:
        self.step, self.emas = step, emas

    def __call__(self, real: Any, labels: Any, index: int) -> Any:
        stats = self.step(real, labels, index)
        for decay, ema in self.emas.items():
            update_ema(ema, self.step.generator, ema_weight(decay, index))
        return stats

    def __getattr__(self, name: str) -> Any:  # state_dict, optimizers, ...: the step's own
        return getattr(self.step, name)


def describe(scores: dict[str, float]) -> str:
    shares = [100 * scores[f"class_{d}"] for d in range(DIGITS)]
    return (f"FID {scores['fid']:.2f}, recall {scores['recall']:.3f}, precision {scores['precision']:.3f}, "
            f"digits {min(shares):.1f}-{max(shares):.1f}% ({', '.join(f'{s:.1f}' for s in shares)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. train.r1_gamma=4")
    parser.add_argument("--ema", default="", help="extra EMA decays to track, comma-separated")
    parser.add_argument("--data-root", default=None, help="folder holding MNIST/raw (default: data.root of the config)")
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint)
    extra = [f"data.root={args.data_root}"] if args.data_root else []
    changes = OmegaConf.from_dotlist([*extra, "wandb.mode=disabled", "eval.enabled=false", *args.overrides])
    cfg = to_config(OmegaConf.merge(OmegaConf.structured(Config), checkpoint["config"], changes))
    trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="screen-")), checkpoint)
    emas = {float(d): copy.deepcopy(trainer.generator_ema) for d in args.ema.split(",") if d}
    trainer.gan_step = StepWithExtraEmas(trainer.gan_step, emas)
    trainer.fit()
    evaluator = Evaluator(cfg.data.root, trainer.device, download=False)
    scored = [(f"G-EMA ({cfg.train.ema_decay})", trainer.generator_ema), ("G", trainer.generator),
              *((f"G-EMA ({decay})", ema) for decay, ema in emas.items())]
    label = " ".join(args.overrides) or "(no change)"
    for name, generator in scored:
        print(f"{args.checkpoint} {label}, epoch {trainer.epoch}, {name}: {describe(evaluator.score_generator(generator, 10000, cfg.eval.seed))}")


if __name__ == "__main__":
    main()
