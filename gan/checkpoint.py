"""Checkpoints: written atomically, read without executing code, checked before use."""

from __future__ import annotations

import os
import pickle
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gan.config import ModelConfig
from gan.errors import GanError

FORMAT_VERSION = 1
KIND = "mnist-gan"


def _fsync_replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    try:  # make the rename itself durable; not every platform lets a directory be opened
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err``: itself, or one it was raised from or while handling."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def save_checkpoint(state: dict[str, Any], path: Path, copies: tuple[Path, ...] = ()) -> None:
    """Write ``state`` to ``path`` (and each of ``copies``) so that a crash mid-write leaves the old file intact."""
    state = {"kind": KIND, "format_version": FORMAT_VERSION, **state}
    temporaries = [target.with_name(f".{target.name}.tmp") for target in (path, *copies)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporaries[0], "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_replace(temporaries[0], path)
        for copy, tmp in zip(copies, temporaries[1:]):
            shutil.copyfile(path, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            _fsync_replace(tmp, copy)
    except (OSError, RuntimeError) as raised:
        # A full disk inside torch.save surfaces as the zip writer's RuntimeError, raised while handling the OSError.
        err = _os_error(raised)
        if err is None:
            raise
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)
        raise GanError(
            f"could not write the checkpoint {path} ({err.strerror or err}); free disk space or run in a writable "
            f"folder (hydra.run.dir=...); the previous checkpoint there is untouched."
        ) from err


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU, refusing anything that is not a checkpoint of this repo."""
    path = Path(path)
    if not path.is_file():
        raise GanError(f"no checkpoint file at {path}; pass the path of a checkpoints/*.pt file from a run directory.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err) or "GLOBAL" in str(err):
            raise GanError(
                f"{path} contains Python objects other than tensors and plain data, so it was not loaded "
                f"(loading it could run code); use a checkpoint written by this repo's train.py."
            ) from None
        raise GanError(f"{path} is corrupt and cannot be read; resume from another checkpoint such as an earlier epoch_NNN.pt.") from None
    except Exception as err:  # damaged bytes can fail anywhere inside the unpickler (seen: IndexError, EOFError, RuntimeError)
        raise GanError(
            f"{path} is truncated or corrupt and cannot be read ({str(err).splitlines()[0]}); "
            f"resume from another checkpoint such as an earlier epoch_NNN.pt."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise GanError(f"{path} is not a checkpoint written by this repo's train.py; pass a checkpoints/*.pt file from a run directory.")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise GanError(
            f"{path} was written in checkpoint format {version}, newer than the {FORMAT_VERSION} this code reads; "
            f"update this repository (git pull) to load it."
        )
    return ckpt


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def _epoch_of(path: Path) -> int | None:
    match = re.fullmatch(r"epoch_(\d+)\.pt", path.name)
    return int(match.group(1)) if match else None


def prune_epoch_checkpoints(checkpoint_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest epoch_NNN.pt files, newest by epoch number; returns the deleted ones.

    By number, not by name: as text, epoch_1000.pt sorts before epoch_950.pt.
    """
    by_epoch = sorted((epoch, path) for path in checkpoint_dir.glob("epoch_*.pt") if (epoch := _epoch_of(path)) is not None)
    stale = [path for _, path in by_epoch[: max(len(by_epoch) - keep_last, 0)]]
    for path in stale:
        path.unlink()
    return stale


def resume_checkpoint(resume: str | None, checkpoint_dir: Path) -> dict[str, Any] | None:
    """The checkpoint ``resume`` names: a path, or ``auto`` for ``checkpoint_dir/last.pt`` when it exists."""
    if resume == "auto":
        last = checkpoint_dir / "last.pt"
        return load_checkpoint(last) if last.is_file() else None
    return load_checkpoint(resume) if resume else None


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
