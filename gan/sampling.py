"""Drawing samples: noise, image grids, the progress GIF, raw tensors, files and a notebook helper.

Loading a trained generator is :func:`gan.export.load_generator` (a checkpoint or an export folder).

A conditional generator (``num_classes`` > 0) draws the digits it is asked for: ``labels`` in
:func:`generate`, ``digit`` in :func:`sample_labels` and :func:`generate_and_plot_samples`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from gan.checkpoint import is_checkpoint
from gan.errors import GanError
from gan.models import Generator
from gan.rundir import replace_atomically


def noise(n: int, latent_dim: int, seed: int | None = None) -> torch.Tensor:
    """Latent vectors drawn on the CPU, so a seed gives the same samples on every device."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return torch.randn(n, latent_dim, generator=generator)


def sample_labels(generator: Generator, n: int, digit: int | None = None) -> torch.Tensor | None:
    """The labels to draw ``n`` samples with: None for an unconditional generator; else ``digit`` n times,
    or (``digit`` None) every class in equal shares, in order 0, 1, ..., 9, 0, 1, ..."""
    if not generator.num_classes:
        if digit is not None:
            raise GanError(f"this generator is unconditional (trained without labels), so it cannot be asked for digit={digit}; "
                           f"leave digit out (digit=null), or train a conditional model with model=conditional.")
        return None
    if digit is not None and not 0 <= digit < generator.num_classes:
        raise GanError(f"digit={digit} is not a class of this generator; pick one of 0..{generator.num_classes - 1}.")
    return torch.full((n,), digit) if digit is not None else torch.arange(n) % generator.num_classes


def grid_inputs(size: int, generator: Generator, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fixed noise (and labels) of a run's sample grids: ``size`` latents; for a conditional generator,
    one row per class with the same latents in every row (size // classes columns, at least one)."""
    if not generator.num_classes:
        return noise(size, generator.latent_dim, seed), None
    columns = max(1, size // generator.num_classes)
    z = noise(columns, generator.latent_dim, seed).repeat(generator.num_classes, 1)
    return z, torch.arange(generator.num_classes).repeat_interleave(columns)


@torch.no_grad()
def generate(generator: Generator, z: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 2048) -> torch.Tensor:
    """Images (N, 1, 28, 28) in [-1, 1] for latents ``z`` (and labels), on the generator's device, in eval mode."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    label_chunks = [None] * len(z.split(batch_size)) if labels is None else labels.split(batch_size)
    try:
        return torch.cat([generator(chunk.to(device), None if label is None else label.to(device))
                          for chunk, label in zip(z.split(batch_size), label_chunks)])
    finally:
        generator.train(was_training)


def grid_uint8(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """A (3, H, W) uint8 grid of images (N, 1, h, w) in [-1, 1], ``nrow`` to a row, on black with ``padding``.

    uint8, so trackers log it without rescaling (W&B casts floats to uint8 unscaled: black grids).
    """
    pixels = _uint8_pixels(images)
    n, height, width = pixels.shape
    columns = min(nrow or max(1, int(math.sqrt(n))), n)
    rows = math.ceil(n / columns)
    grid = torch.zeros(rows * (height + padding) + padding, columns * (width + padding) + padding, dtype=torch.uint8)
    for index, image in enumerate(pixels):
        top, left = padding + (index // columns) * (height + padding), padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid.expand(3, -1, -1).contiguous()


def _uint8_pixels(images: torch.Tensor) -> torch.Tensor:
    """Images (N, 1, h, w) in [-1, 1] -> (N, h, w) uint8, rounded as torchvision's save_image rounds."""
    return images.detach().float().cpu()[:, 0].clamp(-1, 1).add(1).div(2).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> torch.Tensor:
    """Write images in [-1, 1] as one PNG grid; returns the uint8 grid."""
    grid = grid_uint8(images, nrow)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return grid


def grid_epoch(path: Path) -> int:
    """The epoch of a grid named epoch_NNN.png (numeric: epoch_1000 comes after epoch_999)."""
    return int(path.stem.removeprefix("epoch_"))


def write_progress_gif(samples_dir: Path, path: Path, frame_ms: int = 250) -> int:
    """Animate the run's grids (samples_dir/epoch_NNN.png, in epoch order) with the epoch above each frame.

    Returns the number of frames; the last frame is held a little longer.
    """
    from PIL import ImageDraw

    grids = sorted(samples_dir.glob("epoch_*.png"), key=grid_epoch)
    frames = []
    for grid_path in grids:
        grid = Image.open(grid_path).convert("L")
        frame = Image.new("L", (grid.width, grid.height + 16), 0)
        frame.paste(grid, (0, 16))
        ImageDraw.Draw(frame).text((3, 2), f"epoch {grid_epoch(grid_path)}", fill=255)
        frames.append(frame)
    if frames:
        durations = [frame_ms] * (len(frames) - 1) + [4 * frame_ms]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return len(frames)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (N, 1, h, w) in [-1, 1] as uint8 arrays (N, h, w), with the grids' rounding."""
    return _uint8_pixels(images).numpy()


def save_samples(images: torch.Tensor, path: str | Path, overwrite: bool = False, nrow: int | None = None) -> None:
    """Write images by extension: .png a grid, .pt a tensor, .npy a numpy array (raw values in [-1, 1]).

    An existing file is replaced only with ``overwrite`` and never when it is a checkpoint; the write is
    atomic, so a failure leaves whatever was there.
    """
    path = Path(path)
    if path.suffix not in (".png", ".pt", ".npy"):
        raise GanError(f"cannot write samples as '{path.suffix}'; name the output .png (grid), .pt or .npy (raw images).")
    if path.exists():
        if path.is_dir():
            raise GanError(f"out={path} is a folder; name a file in it, e.g. out={path / ('samples' + path.suffix)}.")
        if is_checkpoint(path):
            raise GanError(f"out={path} is a checkpoint, which sample.py never writes over; name another output file.")
        if not overwrite:
            raise GanError(f"out={path} exists; name another file, or add overwrite=true to replace it.")
    images = images.detach().float().cpu()
    writers = {".png": lambda f: Image.fromarray(grid_uint8(images, nrow).permute(1, 2, 0).numpy()).save(f, format="PNG"),
               ".pt": lambda f: torch.save(images, f), ".npy": lambda f: np.save(f, images.numpy())}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, writers[path.suffix])
    except OSError as err:
        raise GanError(f"cannot write {path} ({err.strerror or err}); name a file in a folder that exists and is writable.") from None


def generate_and_plot_samples(generator: Generator, n: int = 16, seed: int | None = None, digit: int | None = None) -> Figure:
    """Draw ``n`` samples (of ``digit``, for a conditional generator) and return a matplotlib figure of them."""
    images = generate(generator, noise(n, generator.latent_dim, seed), sample_labels(generator, n, digit)).cpu()
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    figure = Figure(figsize=(cols * 1.2, rows * 1.2))
    for i, axes in enumerate(figure.subplots(rows, cols, squeeze=False).flat):
        axes.axis("off")
        if i < n:
            axes.imshow(images[i, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
    figure.tight_layout()
    return figure
