"""The eBPF sensor on the real kernel: real cgroups as containers, known workloads, per-cgroup counts.

Needs root and a BPF-capable kernel with headers (scripts/kernel_headers.sh).  Skipped without them,
except when ``CI`` is set: then missing prerequisites fail the run.

Tolerances: each workload runs in its own fresh cgroup, so counts are exact except where the Python
interpreter of the workload adds calls of its own (stated per assertion).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from baseliner.models.ngrams import NUM_BUCKETS, ORDERS, bucket_of, order_of
from baseliner.models.syscalls import canonical_id
from baseliner.sensor.vectors import WindowCounts

from tests.bpf_required import CG_ROOT, require_bpf

pytestmark = pytest.mark.root

WORKLOAD = Path(__file__).with_name("sensor_bpf_workload.py")


@pytest.fixture(scope="module")
def sensitive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sensitive")
    return d


@pytest.fixture(scope="module")
def probes(sensitive_dir: Path) -> Iterator[object]:
    require_bpf()
    from baseliner.sensor.probes import DEFAULT_SENSITIVE_PREFIXES, ProbeConfig, Probes

    cfg = ProbeConfig(ngrams=True, sensitive_prefixes=(*DEFAULT_SENSITIVE_PREFIXES, str(sensitive_dir)))
    with Probes(cfg) as p:
        yield p


@pytest.fixture(scope="module")
def cg_parent() -> Iterator[Path]:
    require_bpf()
    parent = CG_ROOT / f"baseliner-test-{os.getpid()}"
    parent.mkdir(exist_ok=True)
    yield parent
    for child in parent.iterdir():
        if child.is_dir():
            with contextlib.suppress(OSError):
                child.rmdir()
    with contextlib.suppress(OSError):
        parent.rmdir()


_seq = iter(range(10**6))


def run_in_cgroup(probes: object, parent: Path, actions: list[dict[str, object]],
                  netns: str | None = None, timeout: float = 60,
                  on_line: Callable[[str, subprocess.Popen[str]], None] | None = None,
                  ) -> tuple[int, WindowCounts]:
    """Run the workload in a fresh cgroup; return (cgroup id, what the kernel counted meanwhile).

    Lines the workload prints before "done" go to ``on_line(line, workload process)`` (none are
    expected without it)."""
    cg = parent / f"w{next(_seq)}"
    cg.mkdir()
    cmd = [sys.executable, str(WORKLOAD), json.dumps(actions)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        (cg / "cgroup.procs").write_text(str(proc.pid))
        probes.flip()  # type: ignore[attr-defined]  # discard everything before the move
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out = proc.stdout.readline()
        while on_line is not None and out and out.strip() != "done":
            on_line(out.strip(), proc)
            out = proc.stdout.readline()
        assert proc.wait(timeout) == 0 and out.strip() == "done", out
        counts: WindowCounts = probes.flip()  # type: ignore[attr-defined]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cgid = os.stat(cg).st_ino
    return cgid, counts


def test_getppid_counts_exact(probes: object, cg_parent: Path) -> None:
    n = 5000
    cgid, w = run_in_cgroup(probes, cg_parent, [{"getppid": n}])
    got = w.syscalls[cgid].get(110, 0)  # x86_64 getppid
    assert n <= got <= n + 5  # the interpreter itself calls getppid at most a handful of times
    assert w.counter(cgid, "exits") == 1
    assert w.counter(cgid, "lost") == 0 and w.lost_global == 0


def _alternating_pair_grams(n: int) -> dict[int, int]:
    """Bucket -> count of every gram of ``n`` alternating getppid/getuid pairs made by one thread, all orders."""
    a, b = canonical_id("getppid"), canonical_id("getuid")
    return {
        bucket_of([a, b]): n, bucket_of([b, a]): n - 1,
        bucket_of([a, b, a]): n - 1, bucket_of([b, a, b]): n - 1,
        bucket_of([a, b, a, b]): n - 1, bucket_of([b, a, b, a]): n - 2,
        # order 6 (spec v2): the thread's history holds five ids
        bucket_of([a, b, a, b, a, b]): n - 2, bucket_of([b, a, b, a, b, a]): n - 3,
    }


def _check_pair_grams(probes: object, parent: Path, orders: tuple[int, ...]) -> None:
    """The kernel's buckets equal baseliner.models.ngrams.bucket_of's for the orders counted; no others appear."""
    n = 2000
    cgid, w = run_in_cgroup(probes, parent, [{"pair": [n, "getppid", "getuid"]}])
    ng = w.ngrams[cgid]
    expected = {bk: c for bk, c in _alternating_pair_grams(n).items() if order_of(bk) in orders}
    assert sorted({order_of(bk) for bk in expected}) == list(orders)
    for bucket, want in expected.items():
        # other grams of the interpreter may share a bucket: allow a few extra
        assert want <= ng.get(bucket, 0) <= want + 20, (bucket, ng.get(bucket), want)
    # exactly the orders counted, nothing outside the spec's range
    assert all(0 <= bk < NUM_BUCKETS for bk in ng)
    assert {order_of(bk) for bk in ng} == set(orders), sorted({order_of(bk) for bk in ng})


def test_default_program_counts_orders_4_and_6_only(probes: object, cg_parent: Path) -> None:
    """The default program (ProbeConfig.ngram_orders = (4, 6), the orders the model uses) emits order-4
    and order-6 buckets equal to the Python spec's, and no order-2 or order-3 bucket."""
    assert probes.config.ngram_orders == (4, 6)  # type: ignore[attr-defined]
    _check_pair_grams(probes, cg_parent, (4, 6))


@pytest.mark.parametrize("orders", [ORDERS, (2, 3)], ids=["all", "2-3"])
def test_ngram_buckets_match_python_spec(orders: tuple[int, ...], cg_parent: Path) -> None:
    """A program configured with every order matches the Python golden values of each, as before the
    option existed; one without order 6 still counts the short orders exactly."""
    require_bpf()
    from baseliner.sensor.probes import ProbeConfig, Probes

    with Probes(ProbeConfig(ngram_orders=orders)) as p:
        _check_pair_grams(p, cg_parent, orders)


def test_exec_fork_exit_and_paths(probes: object, cg_parent: Path) -> None:
    m = 5
    cgid, w = run_in_cgroup(probes, cg_parent, [{"exec": ["/bin/true", m]}])
    assert w.counter(cgid, "execs") == m
    assert w.exec_paths[cgid] == {"/bin/true": m}  # one entry per distinct path, with its count
    assert w.counter(cgid, "forks") >= m  # plus any helper threads of the interpreter
    assert w.counter(cgid, "exits") == m + 1  # the /bin/true processes and the workload itself


def test_tcp_connects_bytes_refused_dns(probes: object, cg_parent: Path) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except TimeoutError:
                continue
            with c:
                while c.recv(65536):
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, not listening: connects are refused
    try:
        k, nbytes = 4, 10000
        cgid, w = run_in_cgroup(probes, cg_parent, [
            {"connect": ["127.0.0.1", port, k, nbytes]},
            {"connect_fail": ["127.0.0.1", closed_port]},
            {"dns": ["127.0.0.1", 53]},
        ])
    finally:
        stop.set()
        t.join()
        srv.close()
        closed.close()
    assert w.counter(cgid, "connects") == k + 1
    assert w.counter(cgid, "established") == k
    assert w.counter(cgid, "connects_failed") == 1
    assert w.counter(cgid, "dns_queries") == 1
    # bytes: every sendall byte goes through sock_send_length (plus the 7-byte DNS datagram)
    assert w.counter(cgid, "bytes_sent") == k * nbytes + 7
    assert w.counter(cgid, "packets_sent") >= k
    eps = {(e.address, e.port, e.inbound) for e in w.endpoints[cgid]}
    assert ("127.0.0.1", port, False) in eps and ("127.0.0.1", closed_port, False) in eps


def test_arguments_of_ia32_syscalls_are_not_read(probes: object, cg_parent: Path) -> None:
    """int $0x80 in a 64-bit process makes an i386 syscall, numbered and passed in registers as i386 does (44
    there is unused): its registers are not read as those of x86_64's sendto (44).  The same registers with
    the `syscall` instruction are a sendto to port 53, counted as a DNS query (it fails, EBADF, after sys_enter)."""
    cgid, w = run_in_cgroup(probes, cg_parent, [{"sendto_insn": ["127.0.0.1", 53, "int80"]}])
    assert w.syscalls[cgid][44] == 1 and w.counter(cgid, "dns_queries") == 0
    cgid, w = run_in_cgroup(probes, cg_parent, [{"sendto_insn": ["127.0.0.1", 53, "syscall"]}])
    assert w.syscalls[cgid][44] == 1 and w.counter(cgid, "dns_queries") == 1


def test_listen_and_inbound_accept(probes: object, cg_parent: Path, tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    result: dict[str, object] = {}

    def client() -> None:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", int(port_file.read_text())), timeout=10) as s:
            s.sendall(b"hello")
            result["local_port"] = s.getsockname()[1]

    t = threading.Thread(target=client)
    t.start()
    cgid, w = run_in_cgroup(probes, cg_parent, [{"serve": [str(port_file)]}])
    t.join()
    assert w.counter(cgid, "listens") == 1
    assert w.counter(cgid, "accepts") == 1
    assert w.counter(cgid, "bytes_received") == 5
    assert ("127.0.0.1", result["local_port"], True) in {(e.address, e.port, e.inbound)
                                                         for e in w.endpoints[cgid]}


def test_sensitive_write(probes: object, cg_parent: Path, sensitive_dir: Path, tmp_path: Path) -> None:
    target = sensitive_dir / "cron.d-evil"
    cgid, w = run_in_cgroup(probes, cg_parent, [{"write": str(target)}, {"write": str(tmp_path / "ok")}])
    assert w.counter(cgid, "sensitive_writes") == 1
    assert w.sensitive_paths[cgid] == {str(target): 1}
    assert w.counter(cgid, "write_opens") >= 2  # the two writes (the interpreter opens read-only)


def test_sensitive_writes_by_other_names(probes: object, cg_parent: Path, sensitive_dir: Path, tmp_path: Path) -> None:
    """Writes into a sensitive directory that do not name it in an open (issue 19, hole 6): a relative name after
    chdir (also in a forked child), the new name of a rename, link or symlink, and an O_TMPFILE file linked in.
    Each counts as one sensitive write; a relative name is recorded as the directory."""
    sens = str(sensitive_dir)
    (tmp_path / "src").write_text("x")
    (tmp_path / "src2").write_text("x")
    cases: list[tuple[dict[str, object], str]] = [
        ({"chdir_write": [sens, "by-chdir"]}, sens),
        ({"fork_write": [sens, "by-fork"]}, sens),
        ({"rename": [str(tmp_path / "src"), f"{sens}/by-rename"]}, f"{sens}/by-rename"),
        ({"link": [str(tmp_path / "src2"), f"{sens}/by-link"]}, f"{sens}/by-link"),
        ({"symlink": ["/tmp", f"{sens}/by-symlink"]}, f"{sens}/by-symlink"),
        ({"tmpfile_link": [str(tmp_path), f"{sens}/by-tmpfile"]}, f"{sens}/by-tmpfile"),
    ]
    for action, recorded in cases:
        cgid, w = run_in_cgroup(probes, cg_parent, [action])
        assert w.counter(cgid, "sensitive_writes") == 1, action
        assert w.sensitive_paths[cgid] == {recorded: 1}, action
    # a relative name after leaving the directory is not sensitive
    cgid, w = run_in_cgroup(probes, cg_parent, [{"chdir_write": [sens, "inside"]},
                                                 {"chdir_write": [str(tmp_path), "outside"]}])
    assert w.counter(cgid, "sensitive_writes") == 1 and w.counter(cgid, "unresolved_writes") == 0


@pytest.mark.parametrize("kind", ["dirfd_write", "fchdir_write"])
def test_writes_under_a_directory_fd_of_a_sensitive_directory(probes: object, cg_parent: Path, sensitive_dir: Path,
                                                              kind: str) -> None:
    """A relative name under a directory fd opened (O_DIRECTORY) on a sensitive directory, or after fchdir() to
    one, is a write in that directory: one sensitive write, recorded as the directory."""
    cgid, w = run_in_cgroup(probes, cg_parent, [{kind: [str(sensitive_dir), f"by-{kind}"]}])
    assert w.counter(cgid, "sensitive_writes") == 1 and w.counter(cgid, "unresolved_writes") == 0
    assert w.sensitive_paths[cgid] == {str(sensitive_dir): 1}


@pytest.mark.parametrize("kind", ["plain_dirfd_write", "plain_fchdir_write"])
def test_writes_the_sensor_cannot_place_count_as_unresolved(probes: object, cg_parent: Path, sensitive_dir: Path,
                                                            kind: str) -> None:
    """A directory fd the sensor did not see opened as a directory (here: opened without O_DIRECTORY) names a
    directory tracepoints cannot resolve (docs/security.md): a relative write under it, or after fchdir() to
    it, is not a sensitive write, but not silent either: one unresolved write each."""
    cgid, w = run_in_cgroup(probes, cg_parent, [{kind: [str(sensitive_dir), f"by-{kind}"]}])
    assert w.counter(cgid, "sensitive_writes") == 0 and w.counter(cgid, "write_opens") >= 1
    assert w.counter(cgid, "unresolved_writes") == 1
    # an absolute chdir() makes the working directory known again
    cgid, w = run_in_cgroup(probes, cg_parent, [{kind: [str(sensitive_dir), f"by-{kind}-2"]},
                                                 {"chdir_write": [str(sensitive_dir), "after-chdir"]}])
    assert w.counter(cgid, "unresolved_writes") == 1 and w.counter(cgid, "sensitive_writes") == 1


def test_a_closed_sensitive_directory_fd_does_not_follow_its_number(probes: object, cg_parent: Path,
                                                                    sensitive_dir: Path, tmp_path: Path) -> None:
    """The number of a closed directory fd of a sensitive directory, given to another directory, names that
    other directory: a write under it is not sensitive."""
    other = tmp_path / "other"
    other.mkdir()
    cgid, w = run_in_cgroup(probes, cg_parent, [{"reused_dirfd_write": [str(sensitive_dir), "x", str(other)]}])
    assert w.counter(cgid, "sensitive_writes") == 0 and w.counter(cgid, "write_opens") >= 1
    assert (other / "x").exists()


def test_opens_by_each_open_syscall(probes: object, cg_parent: Path, sensitive_dir: Path, tmp_path: Path) -> None:
    """sys_enter tail-calls an open's argument program only when the open's flags are counted, read from the
    register that holds them (open: the second argument, openat: the third), and a close's only while directory
    fds are tracked: each open syscall's write is counted, a read-only open is not, a directory opened by
    open(2) (flags in the second argument) still places a write under its fd, and a closed directory fd is
    still forgotten (test_a_closed_sensitive_directory_fd_does_not_follow_its_number)."""
    from baseliner.sensor.probes import ARGS_ALWAYS, ARGS_WHEN, arg_syscall_numbers

    ids = probes._bpf[b"sysids"]  # type: ignore[attr-defined]
    numbers = arg_syscall_numbers()
    assert {name: ids[ctypes.c_uint32(nr)].args for name, nr in numbers.items()} == {
        name: ARGS_WHEN.get(name, ARGS_ALWAYS) for name in numbers}
    assert ARGS_WHEN == {"close": 2, "open": 3, "openat": 4}  # ARGS_DIRFDS, ARGS_FLAGS_SI, ARGS_FLAGS_DX in sensor.c
    write = os.O_WRONLY | os.O_CREAT
    for name in ("open", "openat", "creat"):
        target = sensitive_dir / f"by-{name}"
        cgid, w = run_in_cgroup(probes, cg_parent, [{"open_syscall": [name, str(target), write]}])
        assert w.counter(cgid, "sensitive_writes") == 1, name
        assert w.sensitive_paths[cgid] == {str(target): 1}, name
    (sensitive_dir / "existing").write_text("x")
    for name in ("open", "openat"):
        cgid, w = run_in_cgroup(probes, cg_parent, [{"open_syscall": [name, str(sensitive_dir / "existing"),
                                                                       os.O_RDONLY]}])
        assert w.counter(cgid, "sensitive_writes") == 0 and cgid not in w.sensitive_paths, name
    cgid, w = run_in_cgroup(probes, cg_parent, [{"syscall_dirfd_write": [str(sensitive_dir), "by-open-dirfd"]}])
    assert w.counter(cgid, "sensitive_writes") == 1 and w.counter(cgid, "unresolved_writes") == 0
    assert w.sensitive_paths[cgid] == {str(sensitive_dir): 1}


@pytest.mark.parametrize("spelling", ["//{d}/f", "/.{d}/f", "/usr/..{d}/f", "{d}/./sub/../f", "{d}//f",
                                      "/usr/bin/../../..{d}/f"],
                         ids=["double-slash", "dot", "dotdot", "dot-and-dotdot-inside", "slashes-inside",
                              "dotdot-past-root"])
def test_sensitive_write_by_unnormalised_path(probes: object, cg_parent: Path, sensitive_dir: Path,
                                              spelling: str) -> None:
    """An absolute name with "//", "/./" or "/../" (issue 19, hole 6) is normalised before the prefixes are
    matched, as the kernel walks it: each spelling counts once and is recorded as the file it opens."""
    (sensitive_dir / "sub").mkdir(exist_ok=True)
    name = spelling.format(d=sensitive_dir)
    cgid, w = run_in_cgroup(probes, cg_parent, [{"write": name}])
    assert w.counter(cgid, "sensitive_writes") == 1, name
    assert w.sensitive_paths[cgid] == {f"{sensitive_dir}/f": 1}, name


def test_unnormalised_paths_that_leave_a_sensitive_directory(probes: object, cg_parent: Path, sensitive_dir: Path,
                                                             tmp_path: Path) -> None:
    """Normalising works both ways: a name that spells a sensitive prefix but leaves it with ".." is not a
    sensitive write; a chdir() to an unnormalised sensitive directory marks the process."""
    cgid, w = run_in_cgroup(probes, cg_parent, [{"write": f"{sensitive_dir}{'/..' * 20}{tmp_path}/out"}])
    assert w.counter(cgid, "sensitive_writes") == 0 and w.counter(cgid, "write_opens") >= 1
    cgid, w = run_in_cgroup(probes, cg_parent, [{"chdir_write": [f"/usr/..{sensitive_dir}/.", "by-chdir"]}])
    assert w.counter(cgid, "sensitive_writes") == 1
    assert w.sensitive_paths[cgid] == {str(sensitive_dir): 1}


def test_a_name_too_long_to_normalise_counts_as_unresolved(probes: object, cg_parent: Path, sensitive_dir: Path,
                                                           tmp_path: Path) -> None:
    """An absolute name that fills the kernel's path buffer may hide a ".." past its end: it is neither matched
    nor passed silently but counted as an unresolved write."""
    name = f"{tmp_path}/{'./' * 200}{'../' * 30}{sensitive_dir}/long"
    cgid, w = run_in_cgroup(probes, cg_parent, [{"write": name}])
    assert w.counter(cgid, "sensitive_writes") == 0
    assert w.counter(cgid, "unresolved_writes") == 1 and w.counter(cgid, "lost") == 0


def test_a_database_saving_its_dump_into_a_sensitive_directory(probes: object, cg_parent: Path,
                                                                sensitive_dir: Path, tmp_path: Path) -> None:
    """A real Redis told to save its dump into a sensitive directory (CONFIG SET dir, then SAVE: it chdir()s
    there, writes temp-PID.rdb by a relative name and renames it to dump.rdb) is seen writing there."""
    import shutil

    from tests.reliability_procs import free_port

    redis = shutil.which("redis-server")
    if redis is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    port = free_port()
    target = sensitive_dir / "dump-target"
    target.mkdir()
    script = (f"{redis} --port {port} --bind 127.0.0.1 --save '' --daemonize no --enable-protected-configs yes "
              f"--dir {tmp_path} & pid=$!; for i in $(seq 100); do redis-cli -p {port} ping >/dev/null 2>&1 && "
              f"break; sleep 0.1; done; redis-cli -p {port} config set dir {target} && redis-cli -p {port} save && "
              f"redis-cli -p {port} shutdown nosave; wait $pid; test -f {target}/dump.rdb")
    cgid, w = run_in_cgroup(probes, cg_parent, [{"run": ["sh", "-c", script]}])
    assert (target / "dump.rdb").exists()
    assert w.counter(cgid, "sensitive_writes") >= 2  # temp-PID.rdb opened, renamed to dump.rdb
    assert set(w.sensitive_paths[cgid]) == {str(target)}


def test_no_counts_lost_across_flips(probes: object, cg_parent: Path) -> None:
    """Flip continuously while the workload runs: the windows add up to exactly what happened."""
    n = 200000
    cg = cg_parent / f"w{next(_seq)}"
    cg.mkdir()
    proc = subprocess.Popen([sys.executable, str(WORKLOAD), json.dumps([{"getppid": n}])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    (cg / "cgroup.procs").write_text(str(proc.pid))
    cgid = os.stat(cg).st_ino
    probes.flip()  # type: ignore[attr-defined]
    proc.stdin.write("go\n")
    proc.stdin.flush()
    total, windows = 0, 0
    while proc.poll() is None:
        time.sleep(0.02)
        total += probes.flip().syscalls.get(cgid, {}).get(110, 0)  # type: ignore[attr-defined]
        windows += 1
    total += probes.flip().syscalls.get(cgid, {}).get(110, 0)  # type: ignore[attr-defined]
    assert windows >= 3
    assert n <= total <= n + 5



def test_counts_follow_a_process_moved_between_cgroups(probes: object, cg_parent: Path) -> None:
    """A process that moves itself back and forth between two cgroups: each syscall is counted for the cgroup it
    was made in (the kernel's per-CPU cache of a task's cgroup is refreshed at every move)."""
    a, b = cg_parent / f"w{next(_seq)}", cg_parent / f"w{next(_seq)}"
    a.mkdir()
    b.mkdir()
    moves, calls = 200, 50
    code = ("import os, sys\n"
            "a, b, moves, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])\n"
            "fa, fb = os.open(a + '/cgroup.procs', os.O_WRONLY), os.open(b + '/cgroup.procs', os.O_WRONLY)\n"
            "for _ in range(moves):\n"
            "    os.write(fa, b'0')\n"
            "    for _ in range(calls): os.getppid()\n"
            "    os.write(fb, b'0')\n"
            "    for _ in range(calls): os.getppid()\n")
    probes.flip()  # type: ignore[attr-defined]
    subprocess.run([sys.executable, "-c", code, str(a), str(b), str(moves), str(calls)], check=True)
    w = probes.flip()  # type: ignore[attr-defined]
    for cg in (a, b):
        assert w.syscalls.get(os.stat(cg).st_ino, {}).get(110) == moves * calls, cg


# ---------------------------------------------------------------- not on loopback

CLIENT_NS, SERVER_NS = f"blc{os.getpid()}", f"bls{os.getpid()}"
CLIENT_IP, SERVER_IP = "10.200.77.1", "10.200.77.2"


@pytest.fixture(scope="module")
def veth() -> Iterator[tuple[str, str]]:
    """Two network namespaces, client and server, joined by a veth pair (10.200.77.0/30).  Neither end
    is in the host's namespace, so runs from other checkouts on the same machine, with the same
    addresses, cannot route into each other's namespaces."""
    require_bpf()

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", CLIENT_NS)
        ip("netns", "add", SERVER_NS)
        ip("link", "add", "veth-c", "netns", CLIENT_NS, "type", "veth", "peer", "name", "veth-s",
           "netns", SERVER_NS)
        for ns, dev, addr in ((CLIENT_NS, "veth-c", CLIENT_IP), (SERVER_NS, "veth-s", SERVER_IP)):
            ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield CLIENT_NS, SERVER_NS
    finally:
        for ns in (CLIENT_NS, SERVER_NS):  # the veth pair goes with them
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# A listener whose accept queue the test holds full, so SYNs from outside are dropped: one connection of
# its own waits in it (backlog 0) and none is ever accepted.  Commands, each answered "ok": "full" waits
# until every connection let in so far has reached the queue (a handshake's last step, the client's ACK,
# may be processed in softirq after the client has moved on), so the queue is full again; "release" makes
# room for exactly one more connection (listen() again raises the backlog of a listening socket);
# "close" closes the listener.
_HELD_SERVER = """
import socket, sys, time
s = socket.socket()
s.bind(("{ip}", 0))
s.listen(0)
port = s.getsockname()[1]
filler = socket.create_connection(("{ip}", port))
print(port, flush=True)

def queued():  # the listener's accept queue length (/proc/net/tcp rx_queue of a LISTEN socket)
    for line in open("/proc/net/tcp").readlines()[1:]:
        f = line.split()
        if f[3] == "0A" and int(f[1].split(":")[1], 16) == port:
            return int(f[4].split(":")[1], 16)

backlog = 0
for line in sys.stdin:
    if line.strip() == "full":
        deadline = time.monotonic() + 20
        while (n := queued()) != backlog + 1:
            assert n < backlog + 1, f"{{n}} connections queued, only {{backlog + 1}} were let in"
            assert time.monotonic() < deadline, f"{{n}} connections queued, {{backlog + 1}} were let in"
            time.sleep(0.001)
    elif line.strip() == "release":
        backlog += 1
        s.listen(backlog)
    elif line.strip() == "close":
        s.close()
    print("ok", flush=True)
"""

POLL_NR = 7  # x86_64 poll(2), what the workload's select.poll() sleeps in


def wait_asleep_in_poll(workload: subprocess.Popen[str], timeout: float = 20) -> None:
    """Wait until the workload, single-threaded, sleeps in poll(2) (``/proc/PID/syscall`` names the
    syscall only of a task that is not running).  From then on it runs no code until its socket
    changes state, so the transition that ends its connect runs outside its context."""
    pid = workload.pid
    deadline = time.monotonic() + timeout
    while True:
        assert workload.poll() is None, "the workload exited (its error is above)"
        assert os.listdir(f"/proc/{pid}/task") == [str(pid)], "the workload must have one thread"
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()[0]
        if syscall == str(POLL_NR):
            return
        assert time.monotonic() < deadline, f"the workload never slept in poll() (in syscall {syscall})"
        time.sleep(0.001)


def test_softirq_transitions_attributed_through_socket(probes: object, cg_parent: Path,
                                                       veth: tuple[str, str]) -> None:
    """TCP transitions after SYN_SENT that run in softirq, on behalf of whatever task is current, must
    be counted for the cgroup that connected (through the socket recorded at connect).

    The workload connects over a veth pair to a listener in another network namespace whose accept
    queue is held full, so its SYN is dropped.  A SYN that arrives while the queue only looks free (an
    earlier handshake's last ACK not yet processed) is answered at once, within the connect() call, in
    the workload's own context: so the connects go one at a time, each only into a queue seen full.
    Only once the workload sleeps in poll() does the server make room (k times) or close the listener
    (once more): the handshake then ends from a SYN retransmitted by the TCP timer (or one still
    queued), in softirq, never in the workload, which sleeps until the transition wakes it.  So each of
    the k + 1 transitions (SYN_SENT -> ESTABLISHED, and SYN_SENT -> CLOSE on the RST for the closed
    listener's port) ran outside the workload's context and must land in its cgroup through the socket."""
    k = 3
    client_ns, server_ns = veth
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c",
                               _HELD_SERVER.format(ip=SERVER_IP)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    commands = iter(["release"] * k + ["close"])

    def tell_server(command: str) -> None:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(command + "\n")
        server.stdin.flush()
        assert server.stdout.readline().strip() == "ok", f"server failed at {command!r}"

    def on_line(line: str, workload: subprocess.Popen[str]) -> None:
        assert workload.stdin is not None
        if line == "ready":  # connect only into a full queue
            tell_server("full")
            workload.stdin.write("connect\n")
            workload.stdin.flush()
        else:
            assert line == "syn-sent", line
            wait_asleep_in_poll(workload)
            tell_server(next(commands))

    try:
        port = int(server.stdout.readline())
        cgid, w = run_in_cgroup(probes, cg_parent, [
            {"connect_held": [SERVER_IP, port, k, "established"]},
            {"connect_held": [SERVER_IP, port, 1, "refused"]},
        ], netns=client_ns, timeout=60, on_line=on_line)
        assert next(commands, None) is None  # every connect went through a held queue
    finally:
        server.kill()
        server.wait()
    assert w.counter(cgid, "connects") == k + 1
    assert w.counter(cgid, "established") == k
    assert w.counter(cgid, "connects_failed") == 1
    # every transition out of SYN_SENT ran while the workload slept: all of them came through the socket
    assert w.counter(cgid, "socket_attributed") == k + 1, w.counters[cgid]
    # (other cgroups may count connections of their own meanwhile: the machine is not otherwise idle, so
    # "none elsewhere" cannot be asserted; the exact counts above are what misattribution would break)
    assert (SERVER_IP, port) in {(e.address, e.port) for e in w.endpoints[cgid]}


def test_bpf_source_vectors_metrics_and_exited_container(probes: object, cg_parent: Path) -> None:
    """BpfSource over the real program: a rule-mapped cgroup becomes a vector with its image; a cgroup
    removed before the drain still gets its last window, marked exited; self-metrics count it all."""
    from baseliner.sensor.attribution import AttributionConfig, ImageRule
    from baseliner.sensor.bpf_source import BpfSource, BpfSourceConfig
    from prometheus_client import CollectorRegistry

    rule = ImageRule(rf"^/{cg_parent.name}/(?P<w>w\d+)$", "test/app:{w}", namespace="ns1")
    reg = CollectorRegistry()
    src = BpfSource(BpfSourceConfig(window_seconds=1.0, attribution=AttributionConfig(
        node="n1", rules=(rule,), host="ignore")), registry=reg, probes=probes)  # type: ignore[arg-type]
    cg = cg_parent / f"w{next(_seq)}"
    cg.mkdir()
    proc = subprocess.Popen([sys.executable, str(WORKLOAD), json.dumps([{"getppid": 1000},
                                                                        {"exec": ["/bin/true", 1]},
                                                                        {"wait": None}])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    (cg / "cgroup.procs").write_text(str(proc.pid))
    src.collect()  # the cgroup is new to the resolver when its counts arrive: it must rescan
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "waiting"
    vectors = src.collect()
    mine = [v for v in vectors if v.identity.container_name == cg.name]
    assert len(mine) == 1
    v = mine[0]
    assert (v.identity.image_repository, v.identity.image_tag, v.identity.namespace) == ("test/app", cg.name, "ns1")
    assert 1000 <= v.syscalls["getppid"] <= 1005 and v.execs == 1 and v.executables == ["/bin/true"]
    assert v.complete and not v.container_exited
    assert all(x.identity.container_id != "host" for x in vectors)  # --host ignore
    # the container's last process exits and its cgroup is removed before the next drain: that last
    # window (with the exit) is still sent, marked
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.wait(30) == 0
    cg.rmdir()
    last = [x for x in src.collect() if x.identity.container_name == cg.name]
    assert len(last) == 1 and last[0].container_exited and last[0].exits == 1
    assert reg.get_sample_value("baseliner_sensor_windows_sent_total") == 3
    assert reg.get_sample_value("baseliner_sensor_events_lost_total") == 0
    assert reg.get_sample_value("baseliner_sensor_drain_seconds_count") == 3
    assert (reg.get_sample_value("baseliner_sensor_process_cpu_seconds_total") or 0) > 0
    assert (reg.get_sample_value("baseliner_sensor_threads_tracked") or 0) > 0  # n-gram histories exist


def test_full_maps_are_counted_as_lost(cg_parent: Path) -> None:
    """A program with tiny maps: what does not fit is counted as lost for the cgroup, never silently,
    and the vector says it is incomplete."""
    require_bpf()
    from baseliner.models.vector import Identity
    from baseliner.sensor.attribution import ContainerInfo
    from baseliner.sensor.probes import ProbeConfig, Probes
    from baseliner.sensor.vectors import build_vectors

    with Probes(ProbeConfig(max_syscall_rows=1, max_ngram_entries=4, max_paths=2)) as tiny:
        cgid, w = run_in_cgroup(tiny, cg_parent, [{"getppid": 100}, {"exec": ["/bin/true", 3]}])
    lost = w.counter(cgid, "lost")
    assert lost > 0
    # the counters that do fit are still exact
    assert w.counter(cgid, "execs") == 3
    info = ContainerInfo(Identity("n1", "c", "img"), "/x")
    (v,) = build_vectors(w, {cgid: info}, window_start=0.0, window_seconds=1.0)
    assert v.events_lost == lost and not v.complete


def test_without_syscall_arg_tracepoints(cg_parent: Path, tmp_path: Path) -> None:
    """--no-syscall-args --no-ngrams: syscalls and the rest still counted, file opens not traced."""
    require_bpf()
    from baseliner.sensor.probes import ProbeConfig, Probes

    with Probes(ProbeConfig(ngrams=False, syscall_args=False)) as lean:
        cgid, w = run_in_cgroup(lean, cg_parent, [{"getppid": 300}, {"write": str(tmp_path / "f")}])
    assert 300 <= w.syscalls[cgid][110] <= 305
    assert w.counter(cgid, "write_opens") == 0 and w.counter(cgid, "exits") == 1
    assert cgid not in w.ngrams


def test_thread_history_cleaned_at_exit(probes: object) -> None:
    """Every thread that makes syscalls gets an n-gram history entry; it goes when the thread exits."""
    before = probes.map_entries()["history"]  # type: ignore[attr-defined]
    code = ("import threading, os\n"
            "def f():\n    os.getppid(); os.getppid()\n"
            "for _ in range(20):\n"
            "    ts = [threading.Thread(target=f) for _ in range(50)]\n"
            "    [t.start() for t in ts]; [t.join() for t in ts]\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    after = probes.map_entries()["history"]  # type: ignore[attr-defined]
    # 1000 threads came and went; what remains is the rest of the machine's churn
    assert after - before < 200, (before, after)
