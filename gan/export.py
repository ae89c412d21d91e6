"""Sharing a trained generator: a folder in the Hugging Face Hub's layout, readable without this repo's checkpoints.

``export_generator`` writes ``model.safetensors`` (the generator's weights; safetensors never runs code on
load), ``config.json`` (what rebuilds it: the model config, latent size, classes, image shape and value
range), ``README.md`` (a model card generated from the run: recipe, final evaluation, a sample grid,
how to load it), ``samples.png``, and optionally ``generator.onnx`` (a dynamic batch axis, and the digit
as a second input for conditional models). The folder is written beside its destination and renamed
into place, so a failure leaves nothing half-written. :func:`load_generator` (and so ``sample.py``) reads
such a folder wherever it reads a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from gan.checkpoint import checkpoint_generator, load_checkpoint
from gan.columns import DIGITS, METRICS
from gan.config import model_config
from gan.device import resolve_device
from gan.errors import GanError
from gan.models import IMAGE_SHAPE, Generator, build_generator
from gan.sampling import generate, noise, sample_labels, save_grid

EXPORT_FORMAT = "mnist-gan-generator"  # config.json's "format" in a folder this module writes
FORMATS = ("safetensors", "onnx")
RECIPE_KEYS = {"optim": None, "data": ("batch_size",),
               "train": ("d_updates", "label_smoothing", "ema_decay", "r1_gamma", "r1_gamma_end", "r1_decay_epochs", "r1_every", "r1_batch")}


def _final_evaluation(checkpoint: Path, ckpt: dict[str, Any], ema: bool) -> dict[str, Any] | None:
    """The run's final evaluation of the exported weights: its eval.json when it belongs to this checkpoint."""
    path = checkpoint.parent.parent / "eval.json"
    try:
        evaluation = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if evaluation.get("step") != ckpt["step"]:
        return None
    return {"n_samples": evaluation["n_samples"], "epoch": evaluation["epoch"], **evaluation["ema" if ema else "raw"]}


def model_card(ckpt: dict[str, Any], evaluation: dict[str, Any] | None, ema: bool, formats: tuple[str, ...]) -> str:
    """README.md of the export: what the generator is, how it was trained, how good it is, how to load it."""
    cfg, model = ckpt["config"], ckpt["config"]["model"]
    conditional = model["num_classes"] > 0
    recipe = [f"model: {model['generator']} / {model['discriminator']}, G {model['latent_dim']}-{'-'.join(map(str, model['g_hidden']))}-784, "
              f"D 784-{'-'.join(map(str, model['d_hidden']))}-1"
              + (f" with minibatch standard deviation over groups of {model['d_mbstd_group']}" if model.get("d_mbstd_group") else "")
              + (f", conditional on {model['num_classes']} digits" if conditional else "")]
    for group, keys in RECIPE_KEYS.items():
        values = {k: v for k, v in cfg[group].items() if keys is None or k in keys}
        recipe.append(f"{group}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    recipe.append(f"epochs: {ckpt['epoch']} ({ckpt['step']:,} steps), seed {cfg['seed']}")
    lines = [
        "---", "library_name: pytorch", "tags: [gan, mnist, image-generation]", "---", "",
        f"# MNIST {'conditional ' if conditional else ''}GAN generator ({'EMA weights' if ema else 'raw weights'})", "",
        f"An MLP generator trained on MNIST by [mnist-gan](https://github.com/) (`python train.py`): it maps "
        f"{model['latent_dim']}-d Gaussian noise{' and a digit (0-9)' if conditional else ''} to 28x28 grayscale digits in [-1, 1].", "",
        "![samples](samples.png)", "", "## Recipe", "", *(f"- {line}" for line in recipe), "", "## Evaluation", "",
    ]
    if evaluation is None:
        lines.append("Not evaluated: the run's final evaluation (eval.json) is missing or belongs to another checkpoint.")
    else:
        lines += [f"The repo's built-in MNIST evaluator (a small MNIST classifier's features, gan/evaluator.py) on "
                  f"{evaluation['n_samples']:,} samples at epoch {evaluation['epoch']}, against the 10,000 MNIST test images:", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {evaluation[key]:.4g} |" for key in METRICS if key in evaluation]
        shares = [evaluation.get(f"class_{d}") for d in range(DIGITS)]
        if all(share is not None for share in shares):
            lines.append("| digit shares | " + ", ".join(f"{d}: {100 * s:.1f}%" for d, s in enumerate(shares)) + " |")
        if conditional and "label_accuracy_0" in evaluation:
            lines.append("| label accuracy per digit | " + ", ".join(f"{d}: {100 * evaluation.get(f'label_accuracy_{d}', float('nan')):.1f}%"
                                                              for d in range(DIGITS)) + " |")
    digit = ", digit=7" if conditional else ""
    lines += ["", "## Use", "", "With this repo:", "", "```python", "from gan import load_generator, generate_and_plot_samples",
              "generator = load_generator(\"path/to/this/folder\")", f"generate_and_plot_samples(generator, n=16{digit})",
              "```", "", f"or `python sample.py checkpoint=path/to/this/folder n=64{digit} out=grid.png`."]
    if "onnx" in formats:
        lines += ["", "Without PyTorch, with onnxruntime:", "", "```python", "import numpy as np, onnxruntime",
                  "session = onnxruntime.InferenceSession(\"generator.onnx\")",
                  f"z = np.random.default_rng(0).standard_normal((16, {model['latent_dim']})).astype(np.float32)",
                  ("images = session.run(None, {\"z\": z, \"labels\": np.full(16, 7, dtype=np.int64)})[0]  # (16, 1, 28, 28) in [-1, 1]"
                   if conditional else "images = session.run(None, {\"z\": z})[0]  # (16, 1, 28, 28) in [-1, 1]"), "```"]
    return "\n".join(lines) + "\n"


class _OnnxGenerator(torch.nn.Module):
    """The generator with its inputs spelled out for the exporter: z, and the labels for a conditional one."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels)


def export_onnx(generator: Generator, path: Path) -> None:
    """``generator.onnx`` with a dynamic batch axis (inputs ``z`` and, when conditional, ``labels``; output ``images``)."""
    z = noise(4, generator.latent_dim, seed=0)
    labels = sample_labels(generator, 4)
    args = (z,) if labels is None else (z, labels)
    batch = torch.export.Dim("batch", min=1)
    shapes = {"z": {0: batch}} if labels is None else {"z": {0: batch}, "labels": {0: batch}}
    torch.onnx.export(_OnnxGenerator(generator).eval(), args, str(path), input_names=list(shapes), output_names=["images"],
                      dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False)


def export_generator(checkpoint: str | Path, out: str | Path, ema: bool = True, formats: tuple[str, ...] = ("safetensors",),
                     push_to_hub: str | None = None) -> Path:
    """Write the generator of ``checkpoint`` into the new folder ``out``; returns it. ``push_to_hub``: also upload it there."""
    from safetensors.torch import save_file

    checkpoint, out = Path(checkpoint), Path(out)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or "safetensors" not in formats:
        raise GanError(f"formats={list(formats)} must include safetensors and may add onnx: use formats=[safetensors] or formats=[safetensors,onnx].")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GanError(f"out={out} exists and is not an empty folder; name a new folder for the export.")
    ckpt = load_checkpoint(checkpoint)
    generator = build_generator(model_config(ckpt["config"]["model"]))
    generator.load_state_dict(ckpt["generator_ema" if ema else "generator"])
    generator.eval()
    model = ckpt["config"]["model"]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise GanError(f"cannot write into {out.parent} ({err.strerror or err}); name a folder in a writable place.") from None
    try:
        save_file({k: v.contiguous() for k, v in generator.state_dict().items()}, staging / "model.safetensors",
                  metadata={"format": EXPORT_FORMAT})
        config = {"format": EXPORT_FORMAT, "format_version": 1, "model": model, "latent_dim": model["latent_dim"],
                  "num_classes": model["num_classes"], "image_shape": list(IMAGE_SHAPE), "value_range": [-1.0, 1.0],
                  "weights": "ema" if ema else "raw", "epoch": ckpt["epoch"], "step": ckpt["step"]}
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        columns = generator.num_classes or None
        save_grid(generate(generator, noise(8 * (columns or 8), generator.latent_dim, seed=0), sample_labels(generator, 8 * (columns or 8))),
                  staging / "samples.png", nrow=columns)
        if "onnx" in formats:
            try:
                export_onnx(generator, staging / "generator.onnx")
            except Exception as err:  # the exporter fails in many ways (a missing onnxscript, an unsupported op): one sentence
                reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
                raise GanError(f"the ONNX export failed ({reason}); install the extra with `pip install -e \".[onnx]\"`, or export "
                               f"formats=[safetensors] alone. Nothing was written to {out}.") from None
        (staging / "README.md").write_text(model_card(ckpt, _final_evaluation(checkpoint, ckpt, ema), ema, tuple(formats)))
        _shareable(staging)
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if push_to_hub:
        upload(out, push_to_hub)
    return out


def _shareable(folder: Path) -> None:
    """Give the folder and its files the modes the umask allows (mkdtemp makes 700 and some writers 600): an export is for sharing."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an export this module wrote (its config.json names the format)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def upload(folder: Path, repo_id: str) -> str:
    """Upload an exported folder to the Hugging Face Hub as model repository ``repo_id``; returns its URL."""
    import huggingface_hub

    if not huggingface_hub.get_token():
        raise GanError(f"not logged in to the Hugging Face Hub, so {folder} was not uploaded; run `hf auth login` (or set HF_TOKEN), "
                       f"then the same command again: an export already in out={folder} is uploaded as it is.")
    api = huggingface_hub.HfApi()
    api.create_repo(repo_id, repo_type="model", exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="Upload an MNIST GAN generator")
    return f"https://huggingface.co/{repo_id}"


def load_generator(checkpoint: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> Generator:
    """The generator (EMA weights by default) of a train.py checkpoint, or of a folder export.py wrote, in eval mode on ``device``."""
    device = resolve_device(device) if isinstance(device, str) else device
    generator = load_export(Path(checkpoint)) if Path(checkpoint).is_dir() else checkpoint_generator(checkpoint, ema)
    return generator.to(device)


def load_export(folder: Path) -> Generator:
    """The generator of a folder export.py wrote (config.json and model.safetensors; the weights it exported)."""
    from safetensors.torch import load_file

    missing = [name for name in ("config.json", "model.safetensors") if not (folder / name).is_file()]
    if missing:
        raise GanError(f"{folder} is a folder without {' and '.join(missing)}, so it is not an export; pass a checkpoints/*.pt file "
                       f"or a folder written by export.py.")
    try:
        config = json.loads((folder / "config.json").read_text())
        if config.get("format") != EXPORT_FORMAT:
            raise ValueError(f"format {config.get('format')!r}")
        generator = build_generator(model_config(config["model"]))
        weights = load_file(folder / "model.safetensors")
        expected = generator.state_dict()
        differing = sorted(k for k in expected.keys() | weights.keys()
                           if k not in expected or k not in weights or expected[k].shape != weights[k].shape)
        if differing:
            raise GanError(f"{folder}/model.safetensors does not match its config.json (differing weights: {', '.join(differing[:4])}"
                           f"{', ...' if len(differing) > 4 else ''}); export it again with `python export.py checkpoint=... out=...`.")
        generator.load_state_dict(weights)
    except GanError:
        raise
    except Exception as err:  # a damaged or foreign folder fails anywhere in json, safetensors or load_state_dict
        raise GanError(f"{folder} is not a readable generator export ({type(err).__name__}); export it again with "
                       f"`python export.py checkpoint=... out=...`.") from None
    return generator.eval()
