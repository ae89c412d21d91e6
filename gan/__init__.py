"""A Hydra-configured MLP GAN for MNIST digits.

The names below load on first use, so ``import gan.config`` (what the scripts import before Hydra starts)
does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"compose": "gan.config", "Discriminator": "gan.models", "Generator": "gan.models", "MlpDiscriminator": "gan.models",
            "MlpGenerator": "gan.models", "generate_and_plot_samples": "gan.sampling", "load_generator": "gan.export"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gan' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
