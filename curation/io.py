"""File helpers shared by every stage: clear input errors, atomic writes, JSONL, hashes, provenance."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class InputError(Exception):
    """Bad user input. Commands print ``str(err)`` as one line and exit with code 2.

    >>> str(InputError("a.tsv", "tag 'X' is not O, B-TYPE or I-TYPE", line=3))
    "a.tsv:3: tag 'X' is not O, B-TYPE or I-TYPE"
    """

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None, record: str | None = None):
        self.path, self.line, self.record, self.message = str(path), line, record, message
        where = self.path + (f":{line}" if line is not None else "") + (f" (record {record})" if record else "")
        super().__init__(f"{where}: {message}")


def read_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file; missing files, non-UTF-8 bytes and empty files raise :class:`InputError`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such file")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(p, f"not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})", line=line) from None
    if not text.strip():
        raise InputError(p, "file is empty")
    return text.removeprefix("\ufeff")


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; invalid JSON raises :class:`InputError`."""
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(path, f"invalid JSON: {err.msg} (column {err.colno})", line=n) from None
        if not isinstance(obj, dict):
            raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=n)
        yield n, obj


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Write to a temporary file beside ``path`` and rename it into place only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8", newline=None if "b" in mode else "") as f:
            yield f
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | os.PathLike, rows) -> int:
    """Write rows as JSON lines atomically; return the row count."""
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str | None:
    """The commit of the checkout this package runs from (``+dirty`` when it has uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bioselect")
    except PackageNotFoundError:
        return "unknown"


def provenance(config: Any = None, inputs: list[str | os.PathLike] = (), **extra: Any) -> dict[str, Any]:
    """How an output was made: command line, resolved config, input hashes, package version, git commit, time."""
    from dataclasses import asdict, is_dataclass

    cfg = asdict(config) if is_dataclass(config) else config
    return {
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "config": cfg,
        "inputs": {str(p): sha256_file(p) for p in inputs if Path(p).is_file()},
        "bioselect_version": package_version(),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


@contextlib.contextmanager
def run_lock(directory: Path, wait: bool = False) -> Iterator[bool]:
    """Hold an exclusive lock on ``directory/.lock`` while a run trains; yield False when another process holds it
    (with ``wait``, block until it is free instead).

    ``flock`` locks belong to the open file and the kernel drops them when their holder exits, so a killed worker
    leaves no stale claim. Where ``fcntl`` is missing (Windows) every run is yielded as free.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield True
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def process_state():
    """accelerate's ``PartialState`` for this process, on the multi-CPU (gloo) backend where there is no GPU (or
    ``ACCELERATE_USE_CPU`` is set): accelerate uses it only when told to use the CPU, and the first caller's
    arguments decide the shared state for every later one."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU"))
