"""Host start time, cold and warm compile cache: see scripts/bench-startup.sh."""

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from benchlib import BIN, ROOT, free_port

COUNTER = os.path.join(ROOT, "guest-examples", "plugins", "counter.wasm")


def leb(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n == 0:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def variant(component, tag):
    """The same component with a custom section appended: other bytes, same code."""
    name = b"wasm-sup-bench"
    body = leb(len(name)) + name + tag.encode()
    return component + b"\x00" + leb(len(body)) + body


def start_once(folder):
    """Seconds from spawn until /readyz is 200, and the host's own summary line."""
    port = free_port()
    log = open(os.path.join(folder, "..", "host.log"), "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [BIN, "run", folder, "--admin", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RUST_LOG": "warn,wasm_sup::watch=info"},
    )
    url = f"http://127.0.0.1:{port}/readyz"
    while True:
        if proc.poll() is not None:
            sys.exit(f"wasm-sup exited early; see {log.name}")
        try:
            if urllib.request.urlopen(url, timeout=1).status == 200:
                break
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.005)
    ready = time.monotonic() - t0
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    log.close()
    text = open(log.name).read()
    m = re.search(r"loaded \d+ plugins in [0-9.]+s[^\n]*", text)
    return ready, m.group(0) if m else "?"


def main():
    plugins = int(sys.argv[1])
    rounds = int(sys.argv[2])
    component = open(COUNTER, "rb").read()
    work = tempfile.mkdtemp(prefix="wasm-sup-bench-")
    folder = os.path.join(work, "plugins")
    os.mkdir(folder)
    try:
        for i in range(plugins):
            with open(os.path.join(folder, f"p{i:05}.wasm"), "wb") as f:
                f.write(variant(component, str(i)))
        cold, cold_line = start_once(folder)
        warm = []
        for _ in range(rounds):
            t, warm_line = start_once(folder)
            warm.append(t)
    finally:
        shutil.rmtree(work)
    warm_median = statistics.median(warm)
    result = {
        "plugins": plugins,
        "component_bytes": len(component),
        "cold_seconds": round(cold, 3),
        "warm_seconds_median": round(warm_median, 3),
        "warm_seconds": [round(t, 3) for t in warm],
        "cold_host_line": cold_line,
        "warm_host_line": warm_line,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    with open(os.path.join(ROOT, "target", "bench", "startup.json"), "w") as f:
        json.dump(result, f, indent=2)
    print()
    print(f"| host start, {plugins} plugins (Rust counter, {len(component)} bytes each) | seconds to /readyz |")
    print("|---|---|")
    print(f"| cold compile cache | {cold:.2f} |")
    print(f"| warm compile cache (median of {rounds}) | {warm_median:.2f} |")
    print()
    print(f"cold: {cold_line}")
    print(f"warm: {warm_line}")


main()
