"""Draw samples from a checkpoint: python sample.py checkpoint=PATH n=64 out=grid.png (or out=samples.pt / .npy).

Add evaluate=true (with n=10000) to print the samples' FID, KID, precision/recall and class balance.
"""

import hydra
from omegaconf import DictConfig

from gan.config import to_config
from gan.errors import exit_on_user_error
from gan.sampling import generate, load_generator, noise, save_samples


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        options = to_config(cfg)
        generator = load_generator(options.checkpoint, ema=options.ema, device=options.device.name)
        images = generate(generator, noise(options.n, generator.latent_dim, options.seed))
        if options.out:
            save_samples(images, options.out)
            print(f"wrote {options.n} samples to {options.out}")
        if options.evaluate:
            from gan.evaluator import Evaluator, format_scores

            evaluator = Evaluator(options.data_root, images.device, download=False)
            print(format_scores({"ema" if options.ema else "raw": evaluator.score(images, options.seed)}))


if __name__ == "__main__":
    main()
