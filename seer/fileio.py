"""Atomic output: a failed or interrupted command never leaves a partial file, or a folder mixing two runs.

Files are written to a hidden temporary sibling (`.NAME.PID.XXXX.tmp`) and renamed into place; result folders
are built whole in a hidden temporary sibling folder and swapped in (`atomic_dir`). Leftovers of a run that was
killed (its process is gone) are removed by the next write to the same place. Outputs get the permissions the
umask allows, as files created by `open` do.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from seer.errors import SeerInputError

# every result folder seer writes whole lists what it wrote here, subfolders included; replacing a folder needs
# this list to cover everything in it, so a folder that also holds a user's own files is never deleted
MANIFEST = ".seer-output"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_public(folder: str | os.PathLike, inside: bool = False) -> None:
    """Give a folder made by `tempfile.mkdtemp` (mode 0700) the mode a plain mkdir would have (the umask's), and
    with `inside` every folder and file under it too (some writers, safetensors among them, make files 0600)."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder) if inside else ():
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: Path, name: str) -> None:
    """Remove `.NAME.PID.*.tmp` leftovers whose writing process no longer exists."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            parts = entry.name.split(".")
            if not (entry.name.startswith(f".{name}.") and entry.name.endswith(".tmp") and len(parts) >= 4):
                continue
            pid = parts[-3]
            if pid.isdigit() and not _alive(int(pid)):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        entry.unlink()


def _parent_of(target: Path) -> tuple[Path, list[Path]]:
    """The target's folder, created when missing; returns it and the folders created (deepest last)."""
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        raise SeerInputError(f"{parent}: exists and is not a folder")
    created = [p for p in [parent, *parent.parents] if not p.exists()][::-1]
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SeerInputError(f"{target}: cannot create its folder ({exc.strerror or exc})") from None
    clean_stale(parent, target.name)
    return parent, created


def remove_empty_folders(created: list[Path]) -> None:
    """Undo the folders a failed write created (only those still empty)."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _through_link(path: str | os.PathLike) -> Path:
    """Where a write to `path` lands: a symbolic link is written through (replacing the link itself would leave
    the folder or file it points to with the old result)."""
    return Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (a link's target); move it into place only if the block succeeds."""
    target = _through_link(path)
    if target.is_dir():
        raise SeerInputError(f"{target}: is a folder, not a file")
    parent, created = _parent_of(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        remove_empty_folders(created)
        raise SeerInputError(f"{target}: cannot write ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        remove_empty_folders(created)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def input_problem(path: str | os.PathLike, what: str = "file") -> str | None:
    """Why `path` cannot be read as an input `what`, or None: missing ("no such `what`"), a link to nothing (or a
    loop of links), or not a regular file (a named pipe would block the read until something writes to it). A
    folder is each caller's to name."""
    if not os.path.exists(path):
        return "a symbolic link to nothing (or a loop of links)" if os.path.islink(path) else f"no such {what}"
    if not os.path.isdir(path) and not os.path.isfile(path):
        return "not a regular file (a named pipe, socket or device)"
    return None


def check_output_dir(path: str | os.PathLike, recording: bool = False) -> None:
    """Refuse, before any work, an output folder that `atomic_dir` would refuse at the end, or could not write."""
    if not str(path):  # Path("") is the current folder
        raise SeerInputError("the output folder's path is empty (--out '')")
    target = _through_link(path)
    _replaceable(target, recording)
    check_writable(target.parent if target.exists() else target)


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before any work, a place nothing can be written to: the nearest existing folder on the way to `path`
    must take a new entry. Probed by making and removing an empty folder there (permission bits tell root nothing,
    nor a read-only or virtual file system such as /proc)."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise SeerInputError(f"{path}: {where} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".seer-probe.", dir=where))
    except OSError as exc:
        raise SeerInputError(f"{path}: cannot write in {where} ({exc.strerror or exc})") from None


# what seer wrote into a result folder before it listed its files (simulate, compare, run, spec bench)
LEGACY_FILES = frozenset(
    (
        "summary.json",
        "requests.parquet",
        "timeline.parquet",
        "events.parquet",
        "compare.json",
        "compare.parquet",
        "iterations.parquet",
        "trained_lengths.parquet",
        "bench.json",
        "bench.parquet",
        "run.json",
        "steps.parquet",
        "trace.parquet",
    )
)


RECORDING_FILES = ("run.json", "steps.parquet")  # what marks a folder `seer run` recorded


def _entries(folder: Path) -> set[str]:
    """Every file and folder under `folder`, as paths relative to it (symbolic links are entries, not followed)."""
    out = set()
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out.update((rel / n).as_posix() for n in (*dirs, *files))
    return out


def _legacy_results(target: Path) -> set[str] | None:
    """The entries of a result folder an older seer wrote (no list of its files): only the files seer writes,
    and per-policy folders of them holding a summary.json (compare); None for anything else."""

    def only_ours(folder: Path, nested: bool) -> bool:
        entries = list(folder.iterdir())
        for p in entries:
            if p.is_dir() and not p.is_symlink():
                if nested or not (p / "summary.json").is_file() or not only_ours(p, True):
                    return False
            elif p.name not in LEGACY_FILES or not p.is_file():
                return False
        return any(p.name in ("summary.json", "compare.json", "bench.json", "run.json") for p in entries)

    return _entries(target) if only_ours(target, False) else None


def _replaceable(target: Path, recording: bool = False) -> None:
    """Refuse a `target` that is no folder, holds the current folder, holds files seer did not write, holds a
    recorded real run that a result other than a new recording (`recording`) would replace, or lies inside another
    result folder (whose files belong together)."""
    if str(target) == "-":
        raise SeerInputError("-: seer writes a result folder here, not standard output (--json prints the summary)")
    for parent in target.absolute().parents:
        if (parent / MANIFEST).is_file():
            raise SeerInputError(
                f"{target}: is inside the seer result folder {parent}, whose files belong together; choose a folder "
                "outside it"
            )
    if not target.exists():
        return
    if not target.is_dir():
        raise SeerInputError(f"{target}: exists and is not a folder")
    if not recording and all((target / f).is_file() for f in RECORDING_FILES):
        # hours of engine time, and seer's own files: only a new `seer run` may replace it
        raise SeerInputError(
            f"{target}: holds a recorded real run ({', '.join(RECORDING_FILES)}), which this result would delete; "
            "choose another output folder"
        )
    if target.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise SeerInputError(f"{target}: is the current folder or holds it; choose another output folder")
    entries = _entries(target) - {MANIFEST}
    if not entries:
        return
    try:
        ours = set(json.loads((target / MANIFEST).read_text()))
    except (OSError, ValueError, TypeError):
        ours = _legacy_results(target)
    if ours is None:
        raise SeerInputError(f"{target}: exists and is not a seer result folder; choose another output folder")
    others = sorted(entries - ours)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise SeerInputError(
            f"{target}: holds files seer did not write ({shown}); replacing the results would delete them, so "
            "choose another output folder"
        )


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, recording: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; if the block succeeds it replaces `path` whole, so the result
    folder is the complete earlier one, the complete new one, or (for an instant) absent. An existing `path` must
    be empty or hold only what an earlier `atomic_dir` wrote there (it is replaced, never merged), and holds a
    recorded real run only when the new result is one too (`recording`). A link is written through."""
    target = _through_link(path)
    _replaceable(target, recording)
    parent, created = _parent_of(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        remove_empty_folders(created)
        raise SeerInputError(f"{target}: cannot write ({exc.strerror or exc})") from None
    try:
        make_public(tmp)
        yield tmp
        (tmp / MANIFEST).write_text(json.dumps(sorted(_entries(tmp))))
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=parent))
            os.replace(target, old / "old")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty_folders(created)
        raise


@contextlib.contextmanager
def staged_files(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden folder inside the folder `path` (created when missing); if the block succeeds, every
    file made in it is moved into `path`, replacing files of the same name and leaving the others. A set of files
    that belong together (figures) is then all of one run or all of the earlier one. Staging inside `path` keeps
    the moves on one file system, whatever `path` links to."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise SeerInputError(f"{target}: exists and is not a folder")
    created = [p for p in [target, *target.parents] if not p.exists()][::-1]
    try:
        target.mkdir(parents=True, exist_ok=True)
        clean_stale(target, "staged")
        tmp = Path(tempfile.mkdtemp(prefix=f".staged.{os.getpid()}.", suffix=".tmp", dir=target))
    except OSError as exc:
        remove_empty_folders(created)
        raise SeerInputError(f"{target}: cannot write ({exc.strerror or exc})") from None
    moved = False
    try:
        yield tmp
        made = sorted(tmp.iterdir())
        blocked = [f.name for f in made if (target / f.name).is_dir() and not (target / f.name).is_symlink()]
        if blocked:  # found before any move: a move failing half-way left a set half of this run, half the last
            raise SeerInputError(f"{target / blocked[0]}: is a folder where a file of this set goes")
        for f in made:
            with contextlib.suppress(OSError):
                os.chmod(f, 0o666 & ~_umask())
            os.replace(f, target / f.name)
        moved = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not moved:
            remove_empty_folders(created)


def inside(folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """`path` resolved, refused unless it lies inside `folder` (command-line text must never steer a write out)."""
    root, p = Path(folder).resolve(), Path(path).resolve()
    if p != root and root not in p.parents:
        raise SeerInputError(f"{path}: would be written outside {folder}")
    return Path(path)


def json_safe(obj):
    """A copy that json.dumps accepts and other tools can read: numpy scalars become Python numbers,
    NaN/inf become null, dict keys become strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()  # numpy scalar
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
