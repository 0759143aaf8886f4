"""What every Baseliner command line shares: path options checked as they are parsed, examples in ``--help``,
and errors reported as one named line (the traceback only with ``--debug``).

The path checks are ``argparse`` types: a missing file or directory stops the command before it does anything,
with argparse's usage line and ``argument --token-file: '/etc/x' is not a readable file``.

>>> readable_file("/nonexistent/token")
Traceback (most recent call last):
argparse.ArgumentTypeError: '/nonexistent/token' is not a readable file
>>> examples("baseliner demo", "baseliner demo --quiet")
'examples:\\n  baseliner demo\\n  baseliner demo --quiet'
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from baseliner.models.errors import BaselinerError, ConfigError

DEBUG_HELP = "on an error, show its traceback (for bug reports)"


def readable_file(value: str) -> str:
    """An existing, readable file."""
    if not (Path(value).is_file() and os.access(value, os.R_OK)):
        raise argparse.ArgumentTypeError(f"{value!r} is not a readable file")
    return value


def existing_dir(value: str) -> str:
    """An existing directory."""
    if not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is not a directory")
    return value


def creatable_dir(value: str) -> str:
    """A directory that exists or can be made: its nearest existing parent is a writable directory."""
    d = Path(value)
    while not d.exists() and d != d.parent:
        d = d.parent
    if not d.is_dir() or not os.access(d, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{value!r} cannot be made: {str(d)!r} is not a writable directory")
    return value


def writable_file(value: str) -> str:
    """A file to write: ``-`` (standard output), or a path whose directory exists."""
    if value == "-":
        return value
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a directory, not a file")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r}: directory {str(path.parent)!r} does not exist")
    return value


def examples(*lines: str) -> str:
    """An ``epilog`` listing example command lines (for parsers with ``RawDescriptionHelpFormatter``)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def report(prog: str, error: BaseException) -> int:
    """Print ``error`` as one line (no traceback) and return the exit status: 2 for bad input, 1 otherwise."""
    if isinstance(error, BaselinerError):
        message = str(error)
    elif isinstance(error, OSError):
        message = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    else:
        message = f"unexpected {type(error).__name__}: {error} (run with --debug for the traceback)"
    print(f"{prog}: {message}", file=sys.stderr)
    return 2 if isinstance(error, ConfigError) else 1
