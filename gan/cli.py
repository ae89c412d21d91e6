"""What the repo's Hydra scripts (train.py, sample.py, export.py) share around Hydra itself: one sentence
for a command line Hydra cannot compose, and one line with exit code 130 for a Ctrl-C while starting.

Hydra prints its own multi-line text (and a hint about HYDRA_FULL_ERROR) for a wrong type, an unknown key
or a missing option. :func:`run_app` asks Hydra to raise those errors instead and says each in one line:
the key, the value, and what it must be. Setting HYDRA_FULL_ERROR=1 yourself still shows the full trace.
This module imports only the standard library at first, so a script can call :func:`quiet_ctrl_c`
before its heavy imports.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

STARTING = "interrupted while starting, before any training; no checkpoint was written."


def _exit_while_starting(signum: int, frame: Any) -> None:
    sys.stderr.write(f"error: {STARTING}\n")
    sys.stderr.flush()
    os._exit(130)


def quiet_ctrl_c() -> None:
    """Until :func:`run_app` starts the app, a Ctrl-C (say, while torch imports) exits 130 with one line instead of a traceback."""
    signal.signal(signal.SIGINT, _exit_while_starting)


def run_app(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function, saying a command line it cannot compose in one sentence (exit 1)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here a Ctrl-C is a KeyboardInterrupt the app handles
    full_traces = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises composition errors to us instead of printing them
    try:
        main()
    except KeyboardInterrupt:  # before the job took over (it says its own line): a half-imported library may not shut down cleanly
        sys.stdout.flush()
        _exit_while_starting(signal.SIGINT, None)
    except (HydraException, OmegaConfBaseException) as err:
        if full_traces:
            raise
        sys.stderr.write(f"error: {config_error_sentence(err)}\n")
        sys.exit(1)


def script_name() -> str:
    name = Path(sys.argv[0]).name
    return name if name.endswith(".py") else "train.py"


def unknown_key_sentence(key: str, schema: type) -> str:
    import dataclasses

    known = ", ".join(f.name for f in dataclasses.fields(schema))
    return f"{key} is not a config key (known there: {known}); check its spelling, or list every key with `python {script_name()} --cfg job`."


def _type_words(hint: Any) -> str:
    """What a value of the schema type ``hint`` must be, in words."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        words = " or ".join(_type_words(a) for a in inner)
        return f"{words} or null" if len(inner) < len(args) else words
    if typing.get_origin(hint) in (list, tuple):
        return "a list in brackets, such as [a,b]"
    return {bool: "true or false", int: "a whole number", float: "a number such as 0.0002", str: "a string"}.get(hint, "another value")


def _schema_hint(err: Any) -> Any:
    for schema in (getattr(err, "object_type", None), getattr(err, "ref_type", None)):
        try:
            return typing.get_type_hints(schema)[err.key]
        except (TypeError, KeyError, NameError):
            continue
    return None


def _causes(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and the errors it was raised from or while handling."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def config_error_sentence(err: BaseException) -> str:
    """One sentence for an error Hydra or OmegaConf raised while composing the command line."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    text = str(err)
    missing = re.search(r"Could not find '(.+)/([^/']+)'", text)
    if missing:
        group, option = missing.groups()
        block = text.split(f"Available options in '{group}':", 1)
        options = re.findall(r"^\t(\S+)$", block[1].split("Config search path", 1)[0], re.M) if len(block) == 2 else []
        options = [o for o in options if o != "schema"]  # the group's typed schema, not a choice
        choices = f"choose one of {', '.join(options)}" if options else f"see conf/{group}/ for the options"
        return f"{group}={option} is not an option of {group}; {choices}."
    appended = re.search(r"An item is already at '([^']+)'", text)
    if appended:
        return f"{appended.group(1)} is already a config key, so it takes no +: write {appended.group(1)}=VALUE."
    cause = next((c for c in _causes(err) if getattr(c, "full_key", None)), err)
    key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
        # A key a YAML file of conf/ sets (not the command line) is named with its file.
        in_file = re.match(r"In '([^']+)': ConfigKeyError", text)
        where = f"conf/{in_file.group(1)}.yaml sets {key}, which" if in_file else key
        schema = getattr(cause, "object_type", None)
        if isinstance(schema, type) and hasattr(schema, "__dataclass_fields__"):
            return unknown_key_sentence(where, schema)
        return f"{where} is not a config key; check its spelling, or list every key with `python {script_name()} --cfg job`."
    if isinstance(cause, ValidationError) and key:
        value = getattr(cause, "value", None)
        hint = _schema_hint(cause)
        must = _type_words(hint) if hint is not None else "of another type"
        return f"{key}={value} is not valid: {key} must be {must}."
    if "override_grammar" in text:
        reason = next((line for line in text.splitlines() if not line.startswith(("Error parsing", "See "))), text)
        return f"cannot read the command line ({reason}); write each override as key=value, e.g. optim.lr=0.0001, and lists as [a,b]."
    return f"invalid configuration: {text.splitlines()[0] if text else type(err).__name__}."
