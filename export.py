"""Share a trained generator: python export.py checkpoint=PATH out=DIR [formats=[safetensors,onnx]] [push_to_hub=USER/REPO].

Writes DIR in the Hugging Face Hub's layout: model.safetensors, config.json, a README.md model card with
the run's recipe and final evaluation, samples.png, and (with onnx) generator.onnx. Load it back with
`gan.load_generator(DIR)` or `python sample.py checkpoint=DIR`.
"""

import hydra
from omegaconf import DictConfig

from gan.config import to_config
from gan.errors import exit_on_user_error
from gan.export import export_generator, upload


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        options = to_config(cfg)
        out = export_generator(options.checkpoint, options.out, ema=options.ema, formats=tuple(options.formats))
        print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
        if options.push_to_hub:
            print(f"uploaded to {upload(out, options.push_to_hub)}")


if __name__ == "__main__":
    main()
