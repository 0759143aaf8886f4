"""Throughput of the Falco alert endpoint: alerts per second a real `baseliner serve` takes over HTTP.

Starts `baseliner serve` as its own process (Falco endpoint on a free loopback port), lets
`baseliner sensor --source synthetic` teach it its images (2 simulated hours, as fast as possible), then
posts Falco-format alerts for those images' containers from ``--clients`` threads of this process, each on
one kept-alive connection (as Falco's libcurl does), and reports alerts/s and per-request latency.  Every
alert is parsed, counted, correlated and compared with a learned baseline, and written as an event.

    .venv/bin/python bench/stack_falco_endpoint.py [--alerts 20000] [--clients 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from procs import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alerts", type=int, default=20000)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()

    grpc_port, falco_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="baseliner-bench-"))
    events = tmp / "events.jsonl"
    cli = [sys.executable, "-m", "baseliner.service.cli"]
    serve = subprocess.Popen([*cli, "serve", "--listen", f"127.0.0.1:{grpc_port}", "--metrics-listen", "",
                              "--events", str(events), "--log-level", "WARNING",
                              "--set", f"falco.listen=127.0.0.1:{falco_port}"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{falco_port}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run([*cli, "sensor", "--source", "synthetic", "--target", f"127.0.0.1:{grpc_port}",
                        "--hours", "2", "--no-attacks"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # containers and images the service has seen (from its own anomaly events, or a fixed id otherwise)
        seen = [json.loads(x) for x in events.read_text().splitlines() if x.strip()] if events.exists() else []
        targets = {(e["container"]["id"][:12], e["image"]["repository"], e["image"]["tag"]) for e in seen}
        targets = targets or {("3ad7b26ded6d", "nginx", "1.27.3")}
        t_alert = time.time()
        bodies = []
        for i in range(1000):
            cid, repo, tag = sorted(targets)[i % len(targets)]
            bodies.append(json.dumps({
                "output": f"alert {i}", "priority": "Notice", "rule": f"rule {i % 20}",
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_alert)) + ".000000000Z",
                "source": "syscall", "tags": ["container"], "hostname": "bench",
                "output_fields": {"container.id": cid, "container.image.repository": repo,
                                  "container.image.tag": tag, "k8s.ns.name": "shop", "k8s.pod.name": "p",
                                  "proc.exepath": "/bin/sh", "evt.type": "execve"}}).encode())
        per = args.alerts // args.clients
        latencies: list[list[float]] = [[] for _ in range(args.clients)]
        errors = [0] * args.clients

        def client(k: int) -> None:
            c = http.client.HTTPConnection("127.0.0.1", falco_port, timeout=30)
            for i in range(per):
                t = time.perf_counter()
                c.request("POST", "/", body=bodies[(k * per + i) % len(bodies)],
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                latencies[k].append(time.perf_counter() - t)
                if r.status != 200:
                    errors[k] += 1
            c.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        lat = sorted(x for per_client in latencies for x in per_client)
        n = len(lat)
        result: dict[str, Any] = {
            "alerts": n, "clients": args.clients, "seconds": round(elapsed, 3),
            "alerts_per_second": round(n / elapsed, 1),
            "latency_ms_p50": round(statistics.median(lat) * 1000, 3),
            "latency_ms_p99": round(lat[int(n * 0.99) - 1] * 1000, 3),
            "errors": sum(errors), "containers": len(targets), "cpus": os.cpu_count(),
        }
    finally:
        serve.terminate()
        serve.wait(30)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
