"""Share a trained generator: python export.py checkpoint=PATH out=DIR [formats=[safetensors,onnx]] [push_to_hub=USER/REPO].

Writes DIR in the Hugging Face Hub's layout: model.safetensors, config.json, a README.md model card with
the run's recipe and final evaluation, samples.png, and (with onnx) generator.onnx. Load it back with
`gan.load_generator(DIR)` or `python sample.py checkpoint=DIR`.
"""

from pathlib import Path

from gan.cli import quiet_ctrl_c, run_app

quiet_ctrl_c()  # a Ctrl-C while the imports below load ends with one line, not a traceback

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from gan.config import to_config  # noqa: E402
from gan.errors import exit_on_user_error  # noqa: E402
from gan.export import export_generator, is_export, upload  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        options = to_config(cfg)
        out = Path(options.out)
        if options.push_to_hub and is_export(out):
            print(f"{out} holds an export already: uploading it as it is")
        else:
            out = export_generator(options.checkpoint, out, ema=options.ema, formats=tuple(options.formats))
            print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
        if options.push_to_hub:
            print(f"uploaded to {upload(out, options.push_to_hub)}")


if __name__ == "__main__":
    run_app(main)
