"""Integrity tags and atomic writes for every file Baseliner reads back (state, spool, spilled baselines).

A file's tag is HMAC-SHA256 with the configured key, or a plain SHA-256 (which catches corruption but
not a forger) when no key is configured, over ``header + b"\\n" + body``.  Readers compare tags with
:func:`hmac.compare_digest` before parsing anything.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from pathlib import Path


def tag(key: bytes | None, header: bytes, body: bytes) -> tuple[str, str]:
    """``(algorithm, hex digest)`` of a header and body.

    >>> tag(None, b"h", b"b")[0], tag(b"k", b"h", b"b")[0]
    ('sha256', 'hmac-sha256')
    """
    m = hmac.new(key, header, hashlib.sha256) if key else hashlib.sha256(header)
    m.update(b"\n")
    m.update(body)
    return ("hmac-sha256" if key else "sha256"), m.hexdigest()


def atomic_write(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that the file is either complete or untouched, whatever happens.

    A temporary file in the same directory, ``fsync``-ed, renamed over ``path``, then the directory
    ``fsync``-ed (``fsync=False`` skips both syncs: atomic against a crash of the process, not the machine).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
