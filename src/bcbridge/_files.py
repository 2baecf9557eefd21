"""Files replaced whole: the old content or the new one is there, never half of either."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str, *, private: bool = False) -> None:
    """Replace `path` with `text` through a temporary file in its folder and one rename.
    `private`: the file readable by the user alone (0600) and its folder made 0700 if new;
    for tokens and credentials."""
    if private:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder, prefix = path.parent, f".{path.name}."
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        if not private:  # mkstemp makes it 0600; an ordinary file gets the usual mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
