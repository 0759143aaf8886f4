"""A workload for the eBPF sensor tests: waits for "go" on stdin, does the actions in argv[1] (JSON), prints
"done" and exits.  The test moves the process into a cgroup between start and "go", so everything the
actions do is counted in that cgroup.

Actions: {"getppid": N}, {"pair": [N, "getppid", "getuid"]}, {"exec": [PATH, M]}, {"connect": [HOST, PORT, K,
SEND_BYTES]}, {"connect_fail": [HOST, PORT]}, {"write": PATH}, {"dns": [HOST, PORT]}, {"serve": [PORT_FILE]}
(listen on an ephemeral port on 127.0.0.1, write it to PORT_FILE, accept one connection and read it to
its end), {"connect_slow": [HOST, PORT, K]} (K parallel connects), {"wait": null} (print "waiting", then
block until the next line on stdin).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading


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
        elif kind == "connect_slow":
            host, port, k = arg
            socks: list[socket.socket] = []

            def one(addr: tuple[str, int], out: list[socket.socket]) -> None:
                out.append(socket.create_connection(addr, timeout=20))

            threads = [threading.Thread(target=one, args=((host, int(port)), socks)) for _ in range(int(k))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if len(socks) != int(k):
                raise SystemExit("not all connects succeeded")
            for s in socks:
                s.close()
        elif kind == "write":
            with open(arg, "w") as f:
                f.write("x")
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
        elif kind == "wait":  # tell the test, then block until it says go on
            print("waiting", flush=True)
            sys.stdin.readline()
        else:
            raise SystemExit(f"unknown action {kind}")
    print("done", flush=True)


if __name__ == "__main__":
    main()
