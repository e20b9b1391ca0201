"""Writing output folders all-or-nothing.

A run that fails half-way must not leave a folder that looks finished (a results file
without its figures, a checkpoint without its weights). Everything is written into a
hidden sibling folder that replaces the target only on success. Checkpoints and every
job's output folder go through here.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def check_writable(target: str | Path) -> Path:
    """Make sure a folder can be written at `target` (its parents are created), before any
    work is done: an output path under a file or on a read-only disk is a ValueError in one
    line, not a traceback after an hour of training."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"output path {target} exists and is not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(prefix=f".{target.name}.check.", dir=target.parent).cleanup()
    except OSError as err:
        raise ValueError(f"cannot write the output folder {target}: {err.strerror or err}") from err
    return target


@contextlib.contextmanager
def staged_output(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `target`, on error it is removed.
    In the extra processes of a data-parallel run the folder is thrown away: the first
    process writes `target`."""
    from vocolab.core.runtime import is_main_process

    if not is_main_process():
        with tempfile.TemporaryDirectory(prefix="vocolab-rank-") as scratch:
            yield Path(scratch)
        return
    target = check_writable(target)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    stage.chmod(0o755)  # mkdtemp makes it private; the finished folder is meant to be shared
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    try:
        if target.exists():
            old = target.with_name(f"{stage.name}.old")
            target.rename(old)
        stage.rename(target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            old.rename(target)  # put the previous folder back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | Path, payload: Any) -> Path:
    """Write `payload` as indented JSON (not in the extra processes of a data-parallel run)."""
    from vocolab.core.runtime import is_main_process

    path = Path(path)
    if not is_main_process():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    return path


__all__ = ["check_writable", "staged_output", "write_json"]
