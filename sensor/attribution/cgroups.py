"""cgroup id (what ``bpf_get_current_cgroup_id`` reports) <-> cgroup path.

The id is the inode number of the cgroup's directory in the cgroup v2 hierarchy, found in ``/proc/mounts``
(``cgroup2``; on hybrid systems typically ``/sys/fs/cgroup/unified``).  :class:`CgroupIndex` walks the
hierarchy and rescans when it meets an unknown id (at most once per :attr:`CgroupIndex.min_rescan_seconds`).
"""

from __future__ import annotations

import os
import time


def find_cgroup2_mount(mounts_file: str = "/proc/mounts") -> str:
    """Mount point of the cgroup v2 hierarchy."""
    with open(mounts_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "cgroup2":
                return parts[1].replace("\\040", " ")
    raise FileNotFoundError(f"no cgroup2 file system in {mounts_file}: the eBPF sensor needs cgroup v2 "
                            "(mount -t cgroup2 none /sys/fs/cgroup/unified)")


class CgroupIndex:
    """cgroup id (directory inode) <-> path relative to the cgroup2 mount ("/" is the root)."""

    def __init__(self, root: str | None = None, min_rescan_seconds: float = 1.0) -> None:
        self.root = root or find_cgroup2_mount()
        self.min_rescan_seconds = min_rescan_seconds
        self._by_id: dict[int, str] = {}
        self._last_scan = float("-inf")

    def scan(self) -> dict[int, str]:
        by_id: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(self.root):
            try:
                ino = os.stat(dirpath).st_ino
            except FileNotFoundError:
                continue
            rel = "/" + os.path.relpath(dirpath, self.root)
            by_id[ino] = "/" if rel == "/." else rel
        self._by_id = by_id
        self._last_scan = time.monotonic()
        return by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def known(self, cgid: int) -> bool:
        return cgid in self._by_id

    def path_of(self, cgid: int) -> str | None:
        """The cgroup's path, checked to be still that cgroup's (rescanning when it is not)."""
        path = self._by_id.get(cgid)
        if path is not None and not self.exists(cgid, path):
            self.forget(cgid)
            path = None
        if path is None and time.monotonic() - self._last_scan >= self.min_rescan_seconds:
            path = self.scan().get(cgid)
        return path

    def forget(self, cgid: int) -> None:
        """Drop a cgroup that is gone (its id may come back for another directory on file systems that reuse
        inode numbers; cgroup2 does not)."""
        self._by_id.pop(cgid, None)

    def exists(self, cgid: int, path: str) -> bool:
        try:
            return os.stat(os.path.join(self.root, path.lstrip("/"))).st_ino == cgid
        except (FileNotFoundError, NotADirectoryError):
            return False
