"""Writing a file whole or not at all: into a temporary file in the same folder, then renamed.

One mechanism for every file reidgen must never leave half-written: checkpoints (a killed run
resumes from the previous one), pictures (never replaced unless asked) and ``metrics.json`` (what
the report trusts as a finished run).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(
    path: str | os.PathLike[str],
    write: Callable[[Path], object],
    *,
    overwrite: bool = True,
    temporary: Path | None = None,
    durable: bool = False,
) -> Path:
    """Calls ``write(temporary)`` to write a temporary file next to ``path``, then gives it
    that name.

    :param path: the file to write; its folder is created if needed.
    :param write: writes the whole content to the path it is given (which does not exist yet,
        or holds a killed write's leftovers to overwrite).
    :param overwrite: replace an existing ``path``; otherwise an existing one (also one that
        appears while writing) is a ``FileExistsError`` naming it.
    :param temporary: the temporary file's path (same folder), e.g. a fixed name that the next
        write overwrites after a killed one; default: a unique hidden name.
    :param durable: flush the bytes to disk before the rename, so a power loss cannot leave an
        empty file under the name.
    :returns: ``path``.

    Whatever fails, the temporary file is removed (a killed process leaves it behind).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own (not tempfile.mkstemp, whose files are private to their owner): the
    # result gets the permissions any new file of this user gets.
    temp = temporary or path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(temp)
        if durable:
            with open(temp, "rb+") as file:
                os.fsync(file.fileno())
        if overwrite:
            os.replace(temp, path)
        else:
            _publish_new(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def _publish_new(temp: Path, path: Path) -> None:
    """Gives the written ``temp`` the name ``path`` unless that name is taken."""
    try:
        # A hard link is never made over an existing name, so a file that appeared meanwhile is
        # not replaced either; the caller removes ``temp``.
        os.link(temp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} exists") from None
    except OSError:
        # A filesystem without hard links: check, then rename.
        if path.exists():
            raise FileExistsError(f"{path} exists") from None
        os.replace(temp, path)
