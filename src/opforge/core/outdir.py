"""The output folder: what opforge owns in it, who may write it, and how a run's files get there.

Rules (docs/generate.md):
- opforge owns only the files listed in the folder's manifest (`Manifest.files`); a later run replaces only those,
  and removes those of them it does not write again. A user's file is never deleted or overwritten: a file of the
  run that would land on one is refused, naming it.
- A non-empty folder without a manifest (not made by opforge) is refused unless `force`.
- A folder whose manifest belongs to another input model is refused unless `force` (then the old run's files are
  replaced): one folder holds one model's plugins, so every rewritten model in it names plugins its library holds.
- One run at a time per folder: a lock (flock on the folder itself) is held from the checks to the last write; a
  second run waits, saying so once.
- A run writes into a staging folder inside OUT (`.opforge-staging-<pid>-*`) and moves its files into place at the
  end; a failed run leaves OUT as it was (a folder it created is removed again). Staging folders of dead processes
  are removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from opforge.core.errors import OpforgeError, UsageError
from opforge.core.manifest import MANIFEST_FILE, Manifest

STAGING_PREFIX = ".opforge-staging-"


def _is_bookkeeping(name: str) -> bool:
    return name.startswith(STAGING_PREFIX)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Remove staging folders left by killed runs (their pid, in the folder name, is dead, or the name has none).
    Call with the folder's lock held, so no live run of this folder is staging."""
    removed = []
    for p in out_dir.glob(f"{STAGING_PREFIX}*"):
        pid_text = p.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and _pid_alive(int(pid_text)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def folder_error(path: Path, e: OSError) -> OpforgeError:
    """One line for an OSError on an output folder (permissions, read-only file system, full disk)."""
    why = e.strerror or str(e)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OpforgeError(f"output folder {path}: cannot write there ({why})")
    return OpforgeError(f"output folder {path}: {why}")


class OutputFolder:
    """An output folder opened for one run. Use as a context manager:

        with OutputFolder(out, model, force) as folder:
            ... write the run's files under folder.staging ...
            folder.commit(manifest)       # checks collisions, moves files into place, writes the manifest
            folder.add_files({...})       # files written into OUT after the commit (reports)

    Leaving the block without commit (an error, Ctrl-C, SIGTERM) removes the staging folder, and the output folder
    itself when this run created it."""

    def __init__(
        self,
        out_dir: str | Path,
        model: str | Path,
        force: bool = False,
        say: Callable[[str], None] | None = None,
        expect: list[str] | None = None,
    ):
        """expect: files the run will write, known in advance (checked for collisions before any work)."""
        self.path = Path(out_dir)
        self.model = Path(model)
        self.force = force
        self.say = say or (lambda msg: None)
        self.staging: Path = self.path  # set in __enter__
        self.created = False
        self.committed = False
        self.previous: Manifest | None = None
        self.owned: set[str] = set()  # files of earlier runs (relative paths) this run may replace
        self._lock_fd: int | None = None
        self.expect = [MANIFEST_FILE, *(expect or [])]

    # -- opening ---------------------------------------------------------------------------------------------
    def __enter__(self) -> OutputFolder:
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"output {self.path} is a file; give a folder (the input model is never overwritten)")
        try:
            if not self.path.exists():
                try:
                    self.path.mkdir(parents=True)
                    self.created = True
                except FileExistsError:  # a concurrent run made it between the check and here: not ours to remove
                    pass
            self._lock()
        except OSError as e:
            raise folder_error(self.path, e) from None
        try:
            remove_stale_staging(self.path)
            self._check_ownership()
            for rel in self.expect:
                self._check_free(rel)
            self.staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.path))
        except OSError as e:
            self._close(success=False)
            raise folder_error(self.path, e) from None
        except BaseException:
            self._close(success=False)
            raise
        return self

    def _lock(self) -> None:
        """flock on the folder itself (no lock file: a refused run leaves no trace in a user's folder)."""
        while True:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.say(f"waiting for another opforge run on {self.path}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            # A failed run removes a folder it created: the waiter then holds a lock on a removed folder.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)
            self.path.mkdir(parents=True, exist_ok=True)

    def _check_ownership(self) -> None:
        entries = [p for p in self.path.iterdir() if not _is_bookkeeping(p.name)]
        try:
            self.previous = Manifest.load(self.path) if (self.path / MANIFEST_FILE).is_file() else None
        except OpforgeError:  # a manifest.json that is not opforge's (or of a version this opforge cannot read)
            self.previous = None
        if self.previous is not None:
            self.owned = set(self.previous.files) or _files_named_by(self.previous, self.path)
            self.owned.add(MANIFEST_FILE)
            if not _same_model(self.previous.input_model, self.model) and not self.force:
                raise UsageError(
                    f"output folder {self.path} holds the plugins of another model ({self.previous.input_model}): "
                    "give another folder, or --force to replace that run's files"
                )
        elif entries and not self.force:
            raise UsageError(
                f"output folder {self.path} is not empty and was not made by opforge (no {MANIFEST_FILE}): "
                "give an empty or new folder, or --force (no file of yours is deleted or overwritten)"
            )

    # -- committing ------------------------------------------------------------------------------------------
    def commit(self, manifest: Manifest) -> None:
        """Move the staged files into the folder. Refuses (before moving anything) when a staged file would replace
        a file opforge does not own; removes the earlier run's files this run does not write again."""
        staged = sorted(str(p.relative_to(self.staging)) for p in self.staging.rglob("*") if not p.is_dir())
        manifest.files = sorted({*staged, MANIFEST_FILE})
        for rel in manifest.files:
            self._check_free(rel)
        manifest.save(self.staging)
        try:
            for rel in staged:
                dest = self.path / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.staging / rel, dest)
            for rel in sorted(self.owned - set(manifest.files)):
                _unlink_ours(self.path, rel)
            os.replace(self.staging / MANIFEST_FILE, self.path / MANIFEST_FILE)  # last: the run is complete
        except OSError as e:
            raise folder_error(self.path, e) from None
        self.owned = set(manifest.files)
        self.committed = True
        self.manifest = manifest

    def _check_free(self, rel: str) -> None:
        dest = self.path / rel
        if rel in self.owned:
            return
        if dest.is_symlink() or dest.exists():
            raise UsageError(f"{dest} exists and is not opforge's: move it, or give another output folder")
        for parent in Path(rel).parents:  # a user's file where our folder goes
            if str(parent) != "." and (self.path / parent).exists() and not (self.path / parent).is_dir():
                raise UsageError(f"{self.path / parent} exists and is not opforge's: move it, or give another folder")

    def add_files(self, files: dict[str, bytes]) -> None:
        """Write files into the committed folder (atomically) and list them in its manifest."""
        from opforge.core.fsutil import atomic_write_bytes

        for rel in files:
            self._check_free(rel)
        try:
            for rel, data in files.items():
                atomic_write_bytes(self.path / rel, data)
        except OSError as e:
            raise folder_error(self.path, e) from None
        self.manifest.files = sorted({*self.manifest.files, *files})
        self.owned |= set(files)
        self.manifest.save(self.path)

    # -- closing ---------------------------------------------------------------------------------------------
    def __exit__(self, exc_type, exc, tb) -> None:
        self._close(success=exc_type is None and self.committed)

    def _close(self, success: bool) -> None:
        if self.staging != self.path:
            shutil.rmtree(self.staging, ignore_errors=True)
        if not success and self.created:
            leftovers = [p for p in self.path.iterdir() if not _is_bookkeeping(p.name)]
            if not leftovers:
                with contextlib.suppress(OSError):
                    self.path.rmdir()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _same_model(recorded: str, model: Path) -> bool:
    """Whether a manifest's input model is `model` (paths compared resolved; a relative recorded path, written by
    an older opforge, is compared by file name)."""
    rec = Path(recorded)
    if rec.is_absolute():
        return rec.resolve() == model.resolve()
    return rec.name == model.name


# What older opforge versions (manifests without a file list) wrote under src/ and plans/, by name pattern.
_LEGACY_PATTERNS = ("src/opforge*", "src/p_*_kernels.cu", "src/p_*_plugin.cpp", "src/*/opforge*", "src/*/p_*")


def _files_named_by(m: Manifest, root: Path) -> set[str]:
    """The files of a run whose manifest (written by an older opforge) has no file list: the files it names, and
    the generated sources by their name patterns."""
    files = {m.output_model, *m.libraries, m.harness}
    for p in m.plugins:
        files |= {p.plan, p.fatbin, p.subgraph, p.plan.removesuffix(".json") + ".cu"}
    for pattern in _LEGACY_PATTERNS:
        files |= {str(f.relative_to(root)) for f in root.glob(pattern) if f.is_file()}
    return {f for f in files if f}


def _unlink_ours(root: Path, rel: str) -> None:
    """Remove a file of an earlier run and the folders it leaves empty (up to root)."""
    p = root / rel
    if p.is_file() or p.is_symlink():
        p.unlink()
    parent = p.parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
