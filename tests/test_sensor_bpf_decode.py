"""eBPF sensor pieces that run anywhere (no root, no bcc): golden inputs for vector building, the generated
program and the n-gram hash the kernel implements (attribution: tests/test_sensor_attribution.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from baseliner.models.ngrams import (
    BUCKETS,
    LONG_BUCKETS,
    LONG_ORDER,
    MAX_ORDER,
    ORDERS,
    SHORT_BUCKETS,
    SPEC_VERSION,
    NgramCounter,
    bucket_of,
    gram_hash,
    order_of,
    parse_orders,
)
from baseliner.models.syscalls import canonical_id, id_table
from baseliner.models.vector import Identity
from baseliner.sensor.attribution import ContainerInfo
from baseliner.sensor.probes import ProbeConfig, _prefix_matcher, build_program
from baseliner.sensor.vectors import CG_FIELDS, Endpoint4, WindowCounts, build_vectors

BPF_DIR = Path(__file__).resolve().parents[1] / "sensor" / "bpf"


def ident(name: str, image: str = "web") -> Identity:
    return Identity(node="n1", container_id=name, image_repository=image, container_name=name)


def golden_counts() -> WindowCounts:
    w = WindowCounts()
    w.syscalls = {101: {0: 10, 1: 5, 110: 3, 999: 1}, 102: {0: 2}, 103: {0: 7}, 1: {39: 4}}
    w.ngrams = {101: {510: 4, 4100: 1}, 102: {510: 1}}
    w.counters = {101: {**dict.fromkeys(CG_FIELDS, 0), "execs": 2, "connects": 3, "connects_failed": 1,
                        "bytes_sent": 100, "lost": 2, "sensitive_writes": 1},
                  102: {**dict.fromkeys(CG_FIELDS, 0), "execs": 1, "bytes_sent": 50}}
    w.exec_paths = {101: {"/bin/sh": 1, "/usr/bin/curl": 1}, 102: {"/bin/sh": 1}}
    w.sensitive_paths = {101: {"/etc/cron.d/x": 1}}
    w.endpoints = {101: [Endpoint4(2, bytes([10, 0, 0, 1]), 443, False, 2),
                         Endpoint4(2, bytes([10, 0, 0, 2]), 4444, False, 1),
                         Endpoint4(2, bytes([10, 0, 0, 9]), 51000, True, 1)]}
    return w


def test_build_vectors_golden() -> None:
    a, b = ident("a"), ident("b", "db")
    attribution = {
        101: ContainerInfo(a, "/a/1"), 102: ContainerInfo(a, "/a/2"),  # two cgroups, one container
        103: ContainerInfo(b, "/b", exited=True, started_at=90.0), 1: None,  # 1: ignored (host)
    }
    vs = {v.identity.container_id: v for v in
          build_vectors(golden_counts(), attribution, window_start=100.0, window_seconds=5.0)}
    assert set(vs) == {"a", "b"}
    va, vb = vs["a"], vs["b"]
    assert va.syscalls == {"read": 12, "write": 5, "getppid": 3, "sys_999": 1}
    assert va.ngrams == {510: 5, 4100: 1}
    assert (va.execs, va.connects, va.connects_failed, va.bytes_sent) == (3, 3, 1, 150)
    assert va.executables == ["/bin/sh", "/usr/bin/curl"]  # by count, then name
    assert va.sensitive_paths == ["/etc/cron.d/x"] and va.sensitive_writes == 1
    assert va.remote_addresses == 3 and va.remote_ports == 2  # inbound client port not a remote port
    assert [(e.address, e.port, e.outbound) for e in va.endpoints][0] == ("10.0.0.1", 443, True)
    assert va.events_lost == 2 and va.complete is False
    assert va.window_start == 100.0 and va.window_seconds == 5.0 and va.seconds_since_start == -1.0
    assert vb.syscalls == {"read": 7} and vb.container_exited and vb.complete
    assert vb.seconds_since_start == 10.0


def test_global_loss_marks_every_vector_incomplete() -> None:
    w = golden_counts()
    w.lost_global = 1
    vs = build_vectors(w, {103: ContainerInfo(ident("b"), "/b")}, window_start=0, window_seconds=1)
    assert len(vs) == 1 and vs[0].complete is False and vs[0].events_lost == 0


def test_cg_fields_match_kernel_struct() -> None:
    src = (BPF_DIR / "sensor.c").read_text()
    body = re.search(r"struct cg_counters \{(.*?)\};", src, re.S)
    assert body is not None
    fields = tuple(re.findall(r"u64 (\w+);", body.group(1)))
    assert fields == CG_FIELDS


def test_kernel_hash_constants_match_python_spec() -> None:
    h = (BPF_DIR / "ngrams.h").read_text()
    for const in ("0x811C9DC5u", "0x01000193u", "0x85EBCA6Bu", "0xC2B2AE35u", "4096u", "65536u"):
        assert const in h
    defines = dict(re.findall(r"#define (NGRAM_\w+) (\S+)", h))
    assert defines["NGRAM_BUCKETS"] == f"{BUCKETS}u" and defines["NGRAM_LONG_BUCKETS"] == f"{LONG_BUCKETS}u"
    assert int(defines["NGRAM_SPEC_VERSION"]) == SPEC_VERSION
    assert int(defines["NGRAM_LONG_ORDER"]) == LONG_ORDER and int(defines["NGRAM_MAX_ORDER"]) == MAX_ORDER
    assert "(3u * NGRAM_BUCKETS)" in h and 3 * BUCKETS == SHORT_BUCKETS
    # the thread history holds MAX_ORDER - 1 ids
    hist = re.search(r"struct thread_hist \{(.*?)\};", h, re.S)
    assert hist is not None and re.findall(r"u32 (p\d);", hist.group(1)) == [f"p{i}" for i in range(1, MAX_ORDER)]
    # golden values from docs/ngram-spec.md (the order-6 one also computed by an independent C program)
    assert hex(canonical_id("read")) == "0xcedfa3c5"
    assert hex(gram_hash([canonical_id("read"), canonical_id("write")])) == "0x15a481fe"
    assert bucket_of([canonical_id("read"), canonical_id("write")]) == 510
    six = [canonical_id(n) for n in ("read", "write", "openat", "close", "mmap", "execve")]
    assert hex(gram_hash(six)) == "0x5cdb3a6a" and bucket_of(six) == 27242
    table = id_table("x86_64")
    assert len(table) == 512 and table[0] == canonical_id("read") and table[110] == canonical_id("getppid")


def test_ngram_windows_add_up() -> None:
    trace = ["read", "write", "close", "read", "write", "openat", "read"]
    whole = NgramCounter()
    whole.feed(trace)
    split = NgramCounter()
    split.feed(trace[:3])
    first = split.drain()
    split.feed(trace[3:])
    second = split.drain()
    total = {k: first.get(k, 0) + second.get(k, 0) for k in set(first) | set(second)}
    assert total == whole.drain()


def test_prefix_matcher_generated() -> None:
    c = _prefix_matcher(("/etc", "/var/spool/cron/"))
    assert "p[0] == 47 && p[1] == 101 && p[2] == 116 && p[3] == 99 && (p[4] == 0 || p[4] == 47)" in c
    assert "/* /var/spool/cron */" in c
    with pytest.raises(ValueError):
        ProbeConfig(sensitive_prefixes=("relative/dir",))
    with pytest.raises(ValueError):
        ProbeConfig(sensitive_prefixes=('/etc"; evil',))


def test_build_program_config() -> None:
    text = build_program(ProbeConfig(ngrams=False, max_cgroups=123))
    assert "#define BASELINER_NGRAMS 0" in text and "#define MAX_CGROUPS 123" in text
    assert "@SENSITIVE_PREFIXES@" not in text and "sensitive_match" in text
    assert "kprobe" not in text.lower().replace("kprobes", "")  # tracepoints only


def _order_defines(text: str) -> dict[int, int]:
    """The first definition of each BASELINER_NGRAM_ORDER_n (the generated head comes before sensor.c's
    #ifndef fallbacks, which the preprocessor then skips)."""
    out: dict[int, int] = {}
    for n, v in re.findall(r"#define BASELINER_NGRAM_ORDER_(\d) (\d+)", text):
        out.setdefault(int(n), int(v))
    return out


def test_ngram_orders_default_and_defines() -> None:
    """The default program counts orders 4 and 6 (the model's); any subset is compiled in as defines."""
    assert ProbeConfig().ngram_orders == (4, 6)
    assert _order_defines(build_program(ProbeConfig())) == {2: 0, 3: 0, 4: 1, 6: 1}
    assert _order_defines(build_program(ProbeConfig(ngram_orders=ORDERS))) == {2: 1, 3: 1, 4: 1, 6: 1}
    assert _order_defines(build_program(ProbeConfig(ngram_orders=(6, 2)))) == {2: 1, 3: 0, 4: 0, 6: 1}
    assert ProbeConfig(ngram_orders=(6, 2)).ngram_orders == (2, 6)  # sorted


def test_each_order_guarded_in_kernel_c() -> None:
    """Each order's bucket in ngram_step is computed and packed only inside its own #if BASELINER_NGRAM_ORDER_n,
    at the bit position and width the drain unpacks (distinct fields, all within 64 bits), the key matches the
    drain's dtype, and the kernel's fallback defaults are the sensor's (4 and 6)."""
    from baseliner.models.ngrams import BUCKETS, LONG_BUCKETS
    from baseliner.sensor.probes import _GRAM_KEY, GRAM_BITS, GRAM_SHIFT

    c = (BPF_DIR / "sensor.c").read_text()
    step = c[c.index("static __always_inline u64 ngram_step"):c.index("static __always_inline void grams_add")]
    blocks = re.findall(r"#if BASELINER_NGRAM_ORDER_(\d)\n(.*?)#endif", step, re.S)
    assert [int(n) for n, _ in blocks] == list(ORDERS)
    for n, body in blocks:
        assert body.count("g |= ") == 1 and f"<< GRAM_SHIFT_{n};" in body and f"gram{n}(" in body, (n, body)
    assert step.count("g |= ") == len(ORDERS)  # none outside the guards
    shifts = {int(n): int(v) for n, v in re.findall(r"#define GRAM_SHIFT_(\d) (\d+)", c)}
    assert shifts == GRAM_SHIFT
    for n in ORDERS:  # bucket + 1 fits its field
        assert (LONG_BUCKETS if n == 6 else BUCKETS) < 1 << GRAM_BITS[n]
    ends = sorted((GRAM_SHIFT[n], GRAM_SHIFT[n] + GRAM_BITS[n]) for n in ORDERS)
    assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:], strict=False)) and ends[-1][1] <= 64
    key = re.search(r"struct gram_key \{(.*?)\};", c, re.S)
    assert key is not None
    fields = re.findall(r"(u\d+) (\w+);", key.group(1))
    assert [name for _, name in fields] == list(_GRAM_KEY.names)
    assert [int(t[1:]) // 8 for t, _ in fields] == [_GRAM_KEY[name].itemsize for name in _GRAM_KEY.names]
    assert _order_defines(c) == {2: 0, 3: 0, 4: 1, 6: 1}


def test_cli_ngram_orders_reach_the_program(capsys: pytest.CaptureFixture[str]) -> None:
    """``--ngram-orders`` (default 4,6) becomes ProbeConfig.ngram_orders and the program's defines;
    ``python -m baseliner.sensor.cli_bpf --print-program`` shows them without root."""
    import argparse

    from baseliner.sensor.cli_bpf import add_bpf_arguments, main, probe_config_from_args

    p = argparse.ArgumentParser()
    add_bpf_arguments(p)
    assert probe_config_from_args(p.parse_args([])).ngram_orders == (4, 6)
    assert probe_config_from_args(p.parse_args(["--ngram-orders", "3,2"])).ngram_orders == (2, 3)
    assert main(["--print-program", "--ngram-orders", "2,3,4,6"]) == 0
    assert _order_defines(capsys.readouterr().out) == {2: 1, 3: 1, 4: 1, 6: 1}
    assert main(["--print-program"]) == 0
    assert _order_defines(capsys.readouterr().out) == {2: 0, 3: 0, 4: 1, 6: 1}
    with pytest.raises(SystemExit):
        p.parse_args(["--ngram-orders", "4,5"])
    assert "argument --ngram-orders: n-gram order 5 is not one of 2, 3, 4, 6" in capsys.readouterr().err


@pytest.mark.parametrize(("orders", "message"), [
    ((), "at least one n-gram order"),
    ((5,), "order 5 is not one of 2, 3, 4, 6"),
    ((4, 7), "order 7 is not one of"),
    ((4, 4), "repeat"),
    (("4",), "not an integer"),
    ((True,), "not an integer"),
])
def test_ngram_orders_refused_clearly(orders: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=f"ngram_orders: .*{message}"):
        ProbeConfig(ngram_orders=orders)  # type: ignore[arg-type]


def test_parse_orders() -> None:
    assert parse_orders("4,6") == (4, 6) and parse_orders(" 6, 2,3 ,4") == ORDERS
    for bad, message in (("", "comma-separated integers"), ("4;6", "comma-separated"), ("4,5", "no order 5"),
                         ("4,,6", "comma-separated"), ("6,6", "repeat")):
        with pytest.raises(ValueError, match=message):
            parse_orders(bad)


@pytest.mark.parametrize("orders", [(4, 6), (2,), (3, 6), ORDERS])
def test_counter_orders_are_the_all_orders_counts_restricted(orders: tuple[int, ...]) -> None:
    """NgramCounter(orders) counts exactly the all-orders counts of those orders (the history is whole)."""
    trace = ["read", "write", "close", "read", "write", "openat", "read", "mmap", "close", "read"]
    full, part = NgramCounter(), NgramCounter(orders)
    for th in (1, 2):
        full.feed(trace[th:], thread=th)
        part.feed(trace[th:], thread=th)
    want = {b: c for b, c in full.drain().items() if order_of(b) in orders}
    assert part.drain() == want and want


def test_prerequisite_messages_say_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from baseliner.sensor import probes

    monkeypatch.setattr(probes.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path / "missing"))
    problems = probes.check_prerequisites()
    assert any(p.startswith("not root") for p in problems)
    assert any("BCC_KERNEL_SOURCE" in p and "include/" in p for p in problems)
    with pytest.raises(probes.PrerequisiteError, match="not root"):
        probes.Probes()
    # with a header tree given, it is the one used
    (tmp_path / "tree" / "include").mkdir(parents=True)
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path / "tree"))
    assert probes.find_kernel_source() == str(tmp_path / "tree")


def test_event_counts_summed_per_feature() -> None:
    """_sum_by adds the per-event counts of equal (cgroup, sub-key) pairs exactly (uint64) and drops zeros."""
    import numpy as np
    from baseliner.sensor.probes import _sum_by

    cg = np.array([2**63 + 5, 7, 2**63 + 5, 7, 7], dtype=np.uint64)
    sub = np.array([110, 110, 110, 2**32 - 1, 39], dtype=np.uint32)
    counts = np.array([2**60, 1, 3, 4, 0], dtype=np.uint64)
    got = {(c, s): v for c, s, v in _sum_by(cg, sub, counts)}
    assert got == {(2**63 + 5, 110): 2**60 + 3, (7, 110): 1, (7, 2**32 - 1): 4}
    assert _sum_by(cg[:0], sub[:0], counts[:0]) == []
