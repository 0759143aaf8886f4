"""Regenerate ``models/syscall_tables.tsv`` (architecture, number, name) from the kernel UAPI headers.

The table is committed so that neither the service nor the evaluator needs kernel headers at run time.
Run on a Debian machine with ``linux-libc-dev`` installed::

    python scripts/gen_syscall_tables.py > models/syscall_tables.tsv
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HEADERS = {
    "i386": Path("/usr/include/x86_64-linux-gnu/asm/unistd_32.h"),
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
}


def parse(path: Path) -> dict[int, str]:
    table: dict[int, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"#define __NR_(\w+)\s+(\d+)$", line.strip())
        if m:
            table[int(m.group(2))] = m.group(1)
    return table


def main() -> None:
    for arch, path in HEADERS.items():
        for nr, name in sorted(parse(path).items()):
            sys.stdout.write(f"{arch}\t{nr}\t{name}\n")


if __name__ == "__main__":
    main()
