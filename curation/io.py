"""File helpers shared by every stage: clear input errors, atomic writes, JSONL, hashes, provenance."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import errno
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Files:
    """The paths a command reads and writes, as its config declares them in a ``files()`` method.

    The command runner (:func:`curation.cli.parse_config`) passes them to :func:`check_files` before the command
    reads anything. ``writes`` lists every output file a run may write (a manifest beside an output too),
    ``folders`` the output folders; paths that are ``None`` or empty are ignored, so optional options can be listed
    as they are. ``sealed`` lists input folders that no output may be written into (a model or adapter folder: a
    folder added inside it would be taken as part of it when it is read next).
    """

    reads: Sequence[str | os.PathLike | None] = ()
    writes: Sequence[str | os.PathLike | None] = ()
    folders: Sequence[str | os.PathLike | None] = ()
    sealed: Sequence[str | os.PathLike | None] = ()


def _same(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)  # symlinks and hard links included
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def check_files(files: Files) -> None:
    """Refuse a run that would write over one of its inputs, or whose outputs cannot be where they are declared.

    An output that is an input (the same file or folder after symlinks and hard links), an output inside one of the
    ``sealed`` folders, an output file that is an existing folder, an output folder that is an existing file, and an
    output under a file raise :class:`InputError` naming the output, so a long run does not fail at its end.

    >>> check_files(Files(reads=["a.tsv"], writes=["b.jsonl", "./a.tsv"]))
    Traceback (most recent call last):
    ...
    curation.io.InputError: ./a.tsv: is an input of this command (a.tsv); write the output elsewhere
    >>> check_files(Files(folders=["runs/lora/merged"], sealed=["runs/lora"]))
    Traceback (most recent call last):
    ...
    curation.io.InputError: runs/lora/merged: is inside runs/lora, an input of this command; write the output elsewhere
    """
    reads = [r for r in [*files.reads, *files.sealed] if r]
    # folders first: an output inside a sealed folder is named by its folder, not by the first file in it
    for out, is_folder in [*((f, True) for f in files.folders if f), *((w, False) for w in files.writes if w)]:
        for src in reads:
            if _same(out, src):
                same = "" if str(out) == str(src) else f" ({src})"
                raise InputError(out, f"is an input of this command{same}; write the output elsewhere")
        for folder in (f for f in files.sealed if f):
            if Path(os.path.realpath(out)).is_relative_to(os.path.realpath(folder)):
                raise InputError(out, f"is inside {folder}, an input of this command; write the output elsewhere")
        path = Path(out)
        if path.is_dir() and not is_folder:
            raise OutputError(out, _OS_ERRORS[errno.EISDIR])
        if path.exists() and not path.is_dir() and is_folder:
            raise OutputError(out, "is a file, not a folder")
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise OutputError(out, f"{parent} is a file, not a folder")


def read_text(path: str | os.PathLike, allow_empty: bool = False) -> str:
    """Read a UTF-8 text file; missing files, non-UTF-8 bytes and empty files (unless ``allow_empty``) raise
    :class:`InputError`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "is a folder, not a file" if p.is_dir() else "no such file")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(p, f"not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})", line=line) from None
    if not text.strip() and not allow_empty:
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


class OutputError(InputError):
    """An output that cannot be written (read-only file system, no space left, a folder in the way, a parent that is
    a file). Commands print it like an :class:`InputError`: one line naming the output, exit code 2."""


_OS_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system or the file size limit",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "exists and is not a folder",
    errno.ENAMETOOLONG: "file name too long",
}


def describe_os_error(err: OSError, path: str | os.PathLike | None = None) -> str:
    """What is wrong, in plain words (one line), for an :class:`OSError` met on ``path`` (default: its filename).

    >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device"))
    'no space left on device'
    """
    path = path if path is not None else err.filename
    if err.errno == errno.ENOTDIR and path is not None:
        parent = next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)
        return f"{parent} is a file, not a folder" if parent else "a parent is a file, not a folder"
    return _OS_ERRORS.get(err.errno) or (err.strerror or str(err) or type(err).__name__).splitlines()[0]


def os_error_line(err: OSError) -> str:
    """``PATH: what is wrong`` for an :class:`OSError` (``what is wrong`` alone when it names no file).

    >>> os_error_line(IsADirectoryError(errno.EISDIR, "Is a directory", "runs/out.json"))
    'runs/out.json: is a folder, not a file'
    """
    what = describe_os_error(err)
    return f"{err.filename}: {what}" if err.filename is not None else what


# Temporary files are named ``.NAME.PID-XXXXXXXX.tmp`` beside their target ``NAME``, so the next write of the same
# target can tell a killed run's leftovers (their process is gone) from a live writer's and remove them.
_TMP = re.compile(r"\.(\d+)-[^.]+\.tmp")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours (EPERM)
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (and folders, :func:`atomic_folder`) that killed writers of ``path`` left beside
    it; return them."""
    import shutil

    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        m = _TMP.fullmatch(tmp.name[len(path.name) + 1:])
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
                removed.append(tmp)
    return removed


class _Group:
    """Files written inside :func:`together`: temporary file -> target, renamed into place at the end."""

    def __init__(self):
        self.pending: dict[Path, Path] = {}


_GROUP: contextvars.ContextVar[_Group | None] = contextvars.ContextVar("bioselect_output_group", default=None)


@contextlib.contextmanager
def together() -> Iterator[None]:
    """Outputs written inside this block (by :func:`atomic_write`, :func:`write_json`, :func:`write_jsonl`) land
    together when it ends without error, or not at all: an output and its manifest, a whole sample ladder.

    Each file goes to its temporary file first; only when every one is complete are they renamed into place (a
    rename does not need free space). A nested block joins the outer one. :func:`staged` gives the temporary path of
    an output written in the block (to hash it for a manifest).
    """
    if _GROUP.get() is not None:
        yield
        return
    group = _Group()
    token = _GROUP.set(group)
    try:
        yield
        for tmp, target in group.pending.items():
            _replace(tmp, target)
    finally:
        _GROUP.reset(token)
        for tmp in group.pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def staged(path: str | os.PathLike) -> Path:
    """Where ``path`` is now: its temporary file while it waits in a :func:`together` block, else ``path``."""
    group = _GROUP.get()
    target = Path(path)
    if group is not None:
        for tmp, dest in reversed(group.pending.items()):
            if dest == target:
                return tmp
    return target


def _replace(tmp: Path, target: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the mode a plain open() would
        os.replace(tmp, target)
    except OSError as err:
        raise OutputError(target, describe_os_error(err, target)) from None


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if isinstance(err, (FileExistsError, NotADirectoryError)):
            err = OSError(errno.ENOTDIR, "Not a directory")
        raise OutputError(path, describe_os_error(err, path)) from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Write to a temporary file beside ``path`` and rename it into place only when the block succeeds (at the end
    of the enclosing :func:`together` block, if there is one).

    A failed write (no space, read-only, a folder in the way, a parent that is a file) raises :class:`OutputError`
    naming ``path``; the temporary file is removed, and so are those that killed runs left for the same ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, _OS_ERRORS[errno.EISDIR])
    _make_parent(path)
    remove_stale_temps(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    except OSError as err:
        raise OutputError(path, describe_os_error(err, path)) from None
    tmp = Path(name)
    group = _GROUP.get()
    try:
        try:
            with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8",
                           newline=None if "b" in mode else "") as f:
                yield f
        except OSError as err:
            if err.filename is not None and Path(err.filename) != tmp:
                raise  # an error of another file (an input read inside the block) speaks for itself
            raise OutputError(path, describe_os_error(err, path)) from None
        if group is not None:
            group.pending[tmp] = path
        else:
            _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path`` to fill; when the block succeeds it is renamed to ``path`` (which
    must not exist, or be an empty folder), else removed. A reader of ``path`` sees the whole folder or none.

    Named like :func:`atomic_write`'s temporary files (``.NAME.PID-XXXXXXXX.tmp``), so the next write of ``path``
    removes what a killed run left. A folder that cannot be made or renamed raises :class:`OutputError`.
    """
    import shutil

    path = Path(path)
    _make_parent(path)
    remove_stale_temps(path)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp"))
    except OSError as err:
        raise OutputError(path, describe_os_error(err, path)) from None
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700; give the folder the mode a plain mkdir would
        try:
            os.rename(tmp, path)  # replaces an empty folder; fails on a file or a folder with anything in it
        except OSError as err:
            raise OutputError(path, describe_os_error(err, path)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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


MODEL_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_model_source(model: str) -> None:
    """A local model folder must hold a ``config.json`` that is JSON and weights (``*.safetensors`` files whose
    header and length agree); a name that is neither a folder nor a hub id (``org/name``) is an
    :class:`InputError` naming it. Hub ids are left to transformers. Nothing is loaded."""
    path = Path(model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(model, "no config.json: not a Hugging Face model folder")
        try:
            json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(path / "config.json", f"not JSON ({err}): a corrupt model folder") from None
        if not any(next(path.glob(g), None) for g in MODEL_WEIGHTS):
            raise InputError(model, "model folder has no weights (*.safetensors or *.bin)")
        for weights in sorted(path.glob("*.safetensors")):
            problem = safetensors_problem(weights)
            if problem:
                raise InputError(weights, f"{problem}: a corrupt or truncated weights file")
    elif path.exists() or not _HUB_ID.match(model):
        raise InputError(model, "no such model folder (and not a hub id like Qwen/Qwen2.5-0.5B-Instruct)")


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a ``.safetensors`` file's framing (None when its header parses and its tensors end where
    the file ends), read from the header alone: an 8-byte little-endian header length, then the JSON header."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return "shorter than a header"
        n = int.from_bytes(raw, "little")
        if n > size - 8:
            return f"header length {n} is past the end of the file ({size} bytes)"
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "header is not JSON"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and "data_offsets" in t]
    if ends and 8 + n + max(ends) != size:
        return f"{size} bytes, but its header describes {8 + n + max(ends)}"
    return None


def unloadable(model: str, what: str, err: Exception) -> InputError:
    """The :class:`InputError` for a model folder that transformers could not load (``what``: "the tokenizer")."""
    first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return InputError(model, f"cannot load {what}: {first}")


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


def drop_incomplete_tail(path: str | os.PathLike) -> None:
    """Cut a partial file back to its last newline (a kill inside a write leaves a torn line), so lines appended
    next start on a line of their own."""
    p = Path(path)
    if not p.exists():
        return
    data = p.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with open(p, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())


def append_lines(path: str | os.PathLike, lines: Sequence[str]) -> None:
    """Append lines and fsync, so a line that is in the file survives a kill or a crash."""
    if not lines:
        return
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


def read_finished_lines(paths: Iterable[str | os.PathLike], what: str, hint: str) -> dict[str, str]:
    """``id -> line`` of every finished line in the append-only part files a killed run left (the shared reader of
    ``curate ifd``'s and ``tune generate``'s partial results). A line cut by the kill has no newline and is ignored;
    the first line of an id wins. A finished line that is not a JSON object with an ``id`` was not written by the
    run: :class:`InputError` naming the file and line, ``what`` the line should be and ``hint`` what to do.

    >>> import tempfile
    >>> part = Path(tempfile.mkdtemp()) / "rank-0.jsonl"
    >>> _ = part.write_text('{"id": 1, "x": 0}\\n{"id": 2, "x": 1}\\n{"id": 1, "x": 2}\\n{"id": 3, "x"')
    >>> read_finished_lines([part], "a result line", "delete it")
    {'1': '{"id": 1, "x": 0}', '2': '{"id": 2, "x": 1}'}
    """
    done: dict[str, str] = {}
    for path in paths:
        for n, raw in enumerate(Path(path).read_bytes().split(b"\n")[:-1], 1):  # the last piece: "" or a cut line
            try:
                line = raw.decode("utf-8")
                done.setdefault(str(json.loads(line)["id"]), line)
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                raise InputError(path, f"not {what}; {hint}", line=n) from None
    return done


def comma_floats(text: str, option: str) -> list[float]:
    """The numbers of a comma-separated option value (empty items skipped); :class:`InputError` naming ``option``
    otherwise.

    >>> comma_floats("0.6, 0.2,0.2", "--split")
    [0.6, 0.2, 0.2]
    """
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(option, f"expected comma-separated numbers, got {text!r}") from None
