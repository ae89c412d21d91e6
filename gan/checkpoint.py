"""Checkpoints: written atomically, read without executing code, checked before use.

``resume=auto`` takes the run's newest readable checkpoint: ``last.pt``, or, when that file is damaged
(a crash or a full disk can leave one so on some file systems), the newest good ``epoch_NNN.pt``, keeping
the damaged file under another name instead of writing over it.
"""

from __future__ import annotations

import logging
import pickle
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gan.config import ModelConfig, model_config
from gan.errors import GanError
from gan.models import Generator, build_generator
from gan.rundir import replace_atomically

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: the model config names its classes (model.generator, model.discriminator) and num_classes
KIND = "mnist-gan"
# What a format-1 checkpoint (from before models were named by the config) was trained with.
FORMAT_1_MODEL = {"generator": "gan.models.MlpGenerator", "discriminator": "gan.models.MlpDiscriminator", "num_classes": 0}


class DamagedCheckpoint(GanError):
    """A checkpoint file that cannot be read: truncated or corrupt bytes."""


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err``: itself, or one it was raised from or while handling."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def save_checkpoint(state: dict[str, Any], path: Path, copies: tuple[Path, ...] = ()) -> None:
    """Write ``state`` to ``path`` (and each of ``copies``) so that a crash mid-write leaves the old file intact."""
    state = {"kind": KIND, "format_version": FORMAT_VERSION, **state}
    target = path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, lambda f: torch.save(state, f))
        for target in copies:
            replace_atomically(target, lambda f: _copy_into(f, path))
    except (OSError, RuntimeError) as raised:
        # A full disk inside torch.save surfaces as the zip writer's RuntimeError, raised while handling the OSError.
        err = _os_error(raised)
        if err is None:
            raise
        raise GanError(
            f"could not write the checkpoint {target} ({err.strerror or err}); free disk space or run in a writable "
            f"folder (hydra.run.dir=...); the previous checkpoint there is untouched."
        ) from err


def _copy_into(f: Any, source: Path) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU, refusing anything that is not a checkpoint of this repo."""
    path = Path(path)
    if not path.is_file():
        raise GanError(f"no checkpoint file at {path}; pass the path of a checkpoints/*.pt file from a run directory.")
    if not _written_by_torch_save(path):
        raise DamagedCheckpoint(f"{path} is not a checkpoint (its bytes are not what torch.save writes); "
                                f"pass a checkpoints/*.pt file from a run directory.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err) or "GLOBAL" in str(err):
            raise GanError(
                f"{path} contains Python objects other than tensors and plain data, so it was not loaded "
                f"(loading it could run code); use a checkpoint written by this repo's train.py."
            ) from None
        raise DamagedCheckpoint(f"{path} is truncated or corrupt and cannot be read{_other_checkpoints(path)}") from None
    except Exception:  # damaged bytes can fail anywhere inside the unpickler (seen: IndexError, EOFError, RuntimeError)
        raise DamagedCheckpoint(f"{path} is truncated or corrupt and cannot be read{_other_checkpoints(path)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise GanError(f"{path} is not a checkpoint written by this repo's train.py; pass a checkpoints/*.pt file from a run directory.")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise GanError(
            f"{path} was written in checkpoint format {version}, newer than the {FORMAT_VERSION} this code reads; "
            f"update this repository (git pull) to load it."
        )
    if version == 1 and isinstance(ckpt.get("config"), dict):
        ckpt["config"]["model"] = {**FORMAT_1_MODEL, **ckpt["config"].get("model", {})}
    return ckpt


def _written_by_torch_save(path: Path) -> bool:
    """Whether the file starts as torch.save's files do: a zip archive (PK), or the legacy pickle format (protocol byte 0x80)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _other_checkpoints(path: Path) -> str:
    """The rest of a damaged-checkpoint sentence: the newest good checkpoint beside it, if any."""
    good = newest_readable_checkpoint(path.parent, exclude=path)
    if good is None:
        return "; no other readable checkpoint is beside it."
    return f"; the newest readable checkpoint beside it is {good}: resume from it with resume={good}."


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint of this repo (memory-mapped, so a large file is not read whole)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch file, or not one of ours: either way not a checkpoint
        return False
    return isinstance(ckpt, dict) and ckpt.get("kind") == KIND


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def _epoch_of(path: Path) -> int | None:
    match = re.fullmatch(r"epoch_(\d+)\.pt", path.name)
    return int(match.group(1)) if match else None


def epoch_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The kept epoch_NNN.pt files, oldest first by epoch number (as text, epoch_1000.pt sorts before epoch_950.pt)."""
    numbered = [(_epoch_of(path), path) for path in checkpoint_dir.glob("epoch_*.pt")]
    return [path for epoch, path in sorted((e, p) for e, p in numbered if e is not None)]


def prune_epoch_checkpoints(checkpoint_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest epoch_NNN.pt files; returns the deleted ones."""
    kept = epoch_checkpoints(checkpoint_dir)
    stale = kept[: max(len(kept) - keep_last, 0)]
    for path in stale:
        path.unlink()
    return stale


def newest_readable_checkpoint(checkpoint_dir: Path, exclude: Path | None = None) -> Path | None:
    """last.pt, else the newest epoch_NNN.pt, that loads; None when none does."""
    for path in (checkpoint_dir / "last.pt", *reversed(epoch_checkpoints(checkpoint_dir))):
        if path.is_file() and path != exclude:
            try:
                torch.load(path, map_location="cpu", weights_only=True)
                return path
            except Exception:  # a damaged file: try the next one
                continue
    return None


def resume_checkpoint(resume: str | None, checkpoint_dir: Path) -> dict[str, Any] | None:
    """The checkpoint ``resume`` names: a path, or ``auto`` for this run's newest readable checkpoint (None when it has none).

    Under ``auto`` a damaged last.pt is renamed (last.pt.damaged) and kept, and the newest good epoch_NNN.pt is taken instead.
    """
    if resume != "auto":
        return load_checkpoint(resume) if resume else None
    last = checkpoint_dir / "last.pt"
    if last.is_file():
        try:
            return load_checkpoint(last)
        except DamagedCheckpoint:
            kept = _free_name(last.with_name("last.pt.damaged"))
            last.rename(kept)
            log.warning("%s is damaged (truncated or corrupt); it is kept as %s", last, kept)
    for path in reversed(epoch_checkpoints(checkpoint_dir)):
        try:
            ckpt = load_checkpoint(path)
        except DamagedCheckpoint:
            log.warning("%s is damaged (truncated or corrupt); trying an older checkpoint", path)
            continue
        log.warning("resuming from %s, the newest readable checkpoint of this run", path)
        return ckpt
    return None


def _free_name(path: Path) -> Path:
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.{number}")
    return candidate


def _override_value(value: Any) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, (list, tuple)) else str(value)


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], ckpt: dict[str, Any], model_cfg: ModelConfig, what: str) -> None:
    """Load ``state`` into ``module``, or say which weights differ and which overrides would match."""
    expected = module.state_dict()
    differing = sorted(
        key for key in expected.keys() | state.keys()
        if key not in expected or key not in state or expected[key].shape != state[key].shape
    )
    if differing:
        trained_with = ckpt.get("config", {}).get("model", {})
        current = asdict(model_cfg)
        overrides = " ".join(
            f"model.{key}={_override_value(value)}" for key, value in trained_with.items() if current.get(key) != value
        )
        raise GanError(
            f"the checkpoint's {what} has another architecture than the config (differing weights: "
            f"{', '.join(differing[:4])}{', ...' if len(differing) > 4 else ''}); "
            f"run with the overrides it was trained with: {overrides or '(not recorded)'}."
        )
    module.load_state_dict(state)


def checkpoint_generator(path: str | Path, ema: bool = True) -> Generator:
    """The generator a train.py checkpoint holds (its EMA weights by default), built from the checkpoint's own model config."""
    ckpt = load_checkpoint(path)
    model_cfg = model_config(ckpt["config"]["model"])
    generator = build_generator(model_cfg)
    load_weights(generator, ckpt["generator_ema" if ema else "generator"], ckpt, model_cfg, "generator")
    return generator.eval()
