"""A workload for the eBPF sensor tests: waits for "go" on stdin, does the actions in argv[1] (JSON), prints
"done" and exits.  The test moves the process into a cgroup between start and "go", so everything the
actions do is counted in that cgroup.

Actions: {"getppid": N}, {"pair": [N, "getppid", "getuid"]}, {"exec": [PATH, M]}, {"connect": [HOST, PORT, K,
SEND_BYTES]}, {"connect_fail": [HOST, PORT]}, {"write": PATH}, {"dns": [HOST, PORT]}, {"serve": [PORT_FILE]}
(listen on an ephemeral port on 127.0.0.1, write it to PORT_FILE, accept one connection and read it to
its end), {"connect_held": [HOST, PORT, K, "established"|"refused"]} (K connects one after another, each
non-blocking: print "ready" and wait for a line on stdin, connect, print "syn-sent" once the SYN is out,
then sleep in poll(2) until the handshake ends, which must end as stated), {"wait": null} (print
"waiting", then block until the next line on stdin).  Paths written other ways: {"chdir_write": [DIR, NAME]}
(chdir, then a relative name), {"fork_write": [DIR, NAME]} (chdir, then a forked child writes the relative
name), {"dirfd_write": [DIR, NAME]} (openat on a directory fd), {"plain_dirfd_write": [DIR, NAME]} (the same, the
directory opened without O_DIRECTORY), {"reused_dirfd_write": [DIR, NAME, OTHER_DIR]} (DIR's fd closed and its
number reused for OTHER_DIR, written in), {"fchdir_write": [DIR, NAME]} / {"plain_fchdir_write": ...} (fchdir to a
directory fd, then a relative name), {"rename": [SRC, DST]}, {"link": [SRC, DST]},
{"symlink": [TARGET, LINK]}, {"tmpfile_link": [DIR, DST]} (an O_TMPFILE file in DIR linked in as DST),
{"open_syscall": [SYSCALL, PATH, FLAGS]} (the open, openat or creat syscall itself, by number, with these open
flags, AT_FDCWD and mode 0600 where it takes them; its fd closed), {"syscall_dirfd_write": [DIR, NAME]} (DIR
opened with O_DIRECTORY by the open syscall, then NAME written under that fd),
{"run": [ARGV...]} (a command, waited for; it must succeed), {"sendto_insn": [HOST, PORT, "syscall"|"int80"]}
(syscall number 44 made by machine code with the `syscall` instruction or with `int $0x80`, r8 pointing at
HOST:PORT: x86_64's sendto(-1, ..., addr) failing with EBADF, or an i386 syscall that does not exist).
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import select
import socket
import struct
import subprocess
import sys

#: machine code of f(addr): r8 = addr; eax = 44; then `syscall` (with rdi = -1) or `int $0x80`; return
_INSN = {
    "syscall": "4989f8" "48c7c7ffffffff" "b82c000000" "0f05" "c3",
    "int80": "4989f8" "b82c000000" "cd80" "c3",
}


def sendto_by_instruction(host: str, port: int, insn: str) -> None:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code = bytes.fromhex(_INSN[insn])
    page[:len(code)] = code
    addr = ctypes.create_string_buffer(struct.pack("<HH4s8x", socket.AF_INET, socket.htons(int(port)),
                                                   socket.inet_aton(host)))
    fn = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    ret = fn(ctypes.addressof(addr))
    if ret != -(errno.EBADF if insn == "syscall" else errno.ENOSYS):
        raise SystemExit(f"{insn}: unexpected result {ret}")


#: x86_64 numbers of the open syscalls {"open_syscall": ...} makes
_OPEN_NR = {"open": 2, "openat": 257, "creat": 85}


def open_by_syscall(name: str, path: str, flags: int) -> int:
    """The fd the open syscall ``name`` returns for ``path`` (flags as given; AT_FDCWD and mode 0600 where taken)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    nr, p, mode = ctypes.c_long(_OPEN_NR[name]), ctypes.c_char_p(path.encode()), ctypes.c_long(0o600)
    if name == "open":
        fd = libc.syscall(nr, p, ctypes.c_long(flags), mode)
    elif name == "openat":
        fd = libc.syscall(nr, ctypes.c_long(-100), p, ctypes.c_long(flags), mode)
    else:
        fd = libc.syscall(nr, p, mode)
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"{name}({path!r})")
    return int(fd)


def main() -> None:
    actions = json.loads(sys.argv[1])
    sys.stdin.readline()
    for act in actions:
        (kind, arg), = act.items()
        if kind == "getppid":
            for _ in range(int(arg)):
                os.getppid()
        elif kind == "pair":
            n, a, b = arg
            fa, fb = getattr(os, a), getattr(os, b)
            for _ in range(int(n)):
                fa()
                fb()
        elif kind == "exec":
            path, m = arg
            for _ in range(int(m)):
                subprocess.run([path], check=True)
        elif kind == "connect":
            host, port, k, nbytes = arg
            for _ in range(int(k)):
                with socket.create_connection((host, int(port)), timeout=10) as s:
                    if nbytes:
                        s.sendall(b"x" * int(nbytes))
        elif kind == "connect_fail":
            host, port = arg
            try:
                socket.create_connection((host, int(port)), timeout=10).close()
                raise SystemExit("connect unexpectedly succeeded")
            except ConnectionRefusedError:
                pass
        elif kind == "connect_held":
            host, port, k, expect = arg
            want = {"established": 0, "refused": errno.ECONNREFUSED}[expect]
            socks: list[socket.socket] = []
            for _ in range(int(k)):
                print("ready", flush=True)
                sys.stdin.readline()
                s = socket.socket()
                socks.append(s)
                s.setblocking(False)
                err = s.connect_ex((host, int(port)))
                if err != errno.EINPROGRESS:
                    raise SystemExit(f"connect: {os.strerror(err)} (expected it to be in progress)")
                print("syn-sent", flush=True)
                p = select.poll()
                p.register(s, select.POLLOUT)
                if not p.poll(30000):
                    raise SystemExit("connect did not end within 30 s")
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err != want:
                    raise SystemExit(f"connect ended with {os.strerror(err)!r}, expected {expect}")
            for s in socks:
                s.close()
        elif kind == "write":
            with open(arg, "w") as f:
                f.write("x")
        elif kind == "chdir_write":
            os.chdir(arg[0])
            with open(arg[1], "w") as f:
                f.write("x")
        elif kind == "fork_write":
            os.chdir(arg[0])
            pid = os.fork()
            if pid == 0:
                fd = os.open(arg[1], os.O_WRONLY | os.O_CREAT, 0o600)
                os.close(fd)
                os._exit(0)
            os.waitpid(pid, 0)
        elif kind == "dirfd_write":
            dfd = os.open(arg[0], os.O_RDONLY | os.O_DIRECTORY)
            os.close(os.open(arg[1], os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dfd))
            os.close(dfd)
        elif kind == "fchdir_write":
            dfd = os.open(arg[0], os.O_RDONLY | os.O_DIRECTORY)
            os.fchdir(dfd)
            os.close(dfd)
            os.close(os.open(arg[1], os.O_WRONLY | os.O_CREAT, 0o600))
        elif kind in ("plain_dirfd_write", "plain_fchdir_write"):  # a directory opened without O_DIRECTORY
            dfd = os.open(arg[0], os.O_RDONLY)
            if kind == "plain_fchdir_write":
                os.fchdir(dfd)
                os.close(os.open(arg[1], os.O_WRONLY | os.O_CREAT, 0o600))
            else:
                os.close(os.open(arg[1], os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dfd))
            os.close(dfd)
        elif kind == "reused_dirfd_write":  # a sensitive directory's fd closed, its number reused by another one
            dfd = os.open(arg[0], os.O_RDONLY | os.O_DIRECTORY)
            os.close(dfd)
            other = os.open(arg[2], os.O_RDONLY | os.O_DIRECTORY)
            os.close(os.open(arg[1], os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=other))
            os.close(other)
        elif kind == "rename":
            os.rename(arg[0], arg[1])
        elif kind == "link":
            os.link(arg[0], arg[1])
        elif kind == "symlink":
            os.symlink(arg[0], arg[1])
        elif kind == "tmpfile_link":
            fd = os.open(arg[0], os.O_TMPFILE | os.O_WRONLY, 0o600)
            os.write(fd, b"x")
            import ctypes  # linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, DST, AT_SYMLINK_FOLLOW), as open(2) says
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.linkat(-100, f"/proc/self/fd/{fd}".encode(), -100, arg[1].encode(), 0x400) != 0:
                raise OSError(ctypes.get_errno(), "linkat")
            os.close(fd)
        elif kind == "open_syscall":
            os.close(open_by_syscall(arg[0], arg[1], int(arg[2])))
        elif kind == "syscall_dirfd_write":
            dfd = open_by_syscall("open", arg[0], os.O_RDONLY | os.O_DIRECTORY)
            os.close(os.open(arg[1], os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dfd))
            os.close(dfd)
        elif kind == "run":
            subprocess.run(arg, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        elif kind == "dns":
            host, port = arg
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"\x00\x01query", (host, int(port)))
        elif kind == "serve":
            (port_file,) = arg
            with socket.socket() as srv:
                srv.bind(("127.0.0.1", 0))
                srv.listen(1)
                with open(port_file + ".tmp", "w") as f:
                    f.write(str(srv.getsockname()[1]))
                os.rename(port_file + ".tmp", port_file)
                conn, _ = srv.accept()
                with conn:
                    while conn.recv(65536):
                        pass
        elif kind == "sendto_insn":
            sendto_by_instruction(*arg)
        elif kind == "wait":  # tell the test, then block until it says go on
            print("waiting", flush=True)
            sys.stdin.readline()
        else:
            raise SystemExit(f"unknown action {kind}")
    print("done", flush=True)


if __name__ == "__main__":
    main()
