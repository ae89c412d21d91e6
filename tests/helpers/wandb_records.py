"""Read back what an offline W&B run logged, from its .wandb file.

Offline runs write no config.yaml or summary json, so the run's own record log is the truth. It is a
7-byte header followed by LevelDB-log framing (32 KiB blocks; records split into FIRST/MIDDLE/LAST
chunks) around protobuf ``Record`` messages.

The W&B service (0.31) holds a run's records in a buffer until it closes the file, and it closes it
after ``run.finish()`` has returned: the Python side tells it to and does not wait (a publish, not a
request). Read at once, the file can hold its 7-byte header alone (seen in CI: a finished run read back
with no records). ``read_run`` waits for the exit record, the last one a finished run writes.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2

BLOCK, HEADER, FILE_HEADER = 32768, 7, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a .wandb file"
    records, pending, pos = [], b"", FILE_HEADER
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # a block's tail too short for a header is padding
            pos += left_in_block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            records.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            records.append(pending + chunk)
        elif kind == 0 and length == 0:  # zero fill at the end of a block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
    return records


@dataclass
class LoggedRun:
    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # the latest value of each key set in run.summary
    step_metrics: dict[str, str] = field(default_factory=dict)  # define_metric: metric (or glob) -> its x axis
    exit_code: int | None = None


def read_run(path: Path, timeout: float = 60.0) -> LoggedRun:
    """What a finished run logged, once its file holds the exit record (waits up to ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            run = parse_run(path)
        except DecodeError:  # a record cut short by a write still under way
            run = None
        if run is not None and run.exit_code is not None:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no exit record after {timeout:.0f} s: the run was not finished")
        time.sleep(0.1)


def parse_run(path: Path) -> LoggedRun:
    run = LoggedRun()
    for raw in raw_records(path):
        record = wandb_internal_pb2.Record.FromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.name, run.group = record.run.run_id, record.run.display_name, record.run.run_group
            run.tags, run.job_type = list(record.run.tags), record.run.job_type
            for item in record.run.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "metric":
            run.step_metrics[record.metric.name or record.metric.glob_name] = record.metric.step_metric
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def unwrap(config_value: Any) -> Any:
    """W&B stores each top-level config key as {"value": ...}."""
    return config_value["value"] if isinstance(config_value, dict) and "value" in config_value else config_value
