"""Draw samples from a checkpoint: python sample.py checkpoint=PATH n=64 out=grid.png (or out=samples.pt / .npy).

A conditional model (model=conditional) draws a chosen digit with digit=7, or every digit in equal shares
(one per column of the grid) by default. Add evaluate=true (with n=10000) to print the samples' FID, KID,
precision/recall and class balance. An existing out= file is replaced only with overwrite=true, and a
checkpoint never.
"""

from gan.cli import quiet_ctrl_c, run_app

quiet_ctrl_c()  # a Ctrl-C while the imports below load ends with one line, not a traceback

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from gan.config import to_config  # noqa: E402
from gan.errors import exit_on_user_error  # noqa: E402
from gan.export import load_generator  # noqa: E402
from gan.sampling import generate, noise, sample_labels, save_samples  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        options = to_config(cfg)
        generator = load_generator(options.checkpoint, ema=options.ema, device=options.device.name)
        labels = sample_labels(generator, options.n, options.digit)
        images = generate(generator, noise(options.n, generator.latent_dim, options.seed), labels)
        if options.out:
            columns = generator.num_classes if labels is not None and options.digit is None else None
            save_samples(images, options.out, overwrite=options.overwrite, nrow=columns)
            print(f"wrote {options.n} samples to {options.out}")
        if options.evaluate:
            from gan.evaluator import Evaluator, format_scores

            evaluator = Evaluator(options.data_root, images.device, download=False)
            print(format_scores({"ema" if options.ema else "raw": evaluator.score(images, options.seed, labels)}))


if __name__ == "__main__":
    run_app(main)
