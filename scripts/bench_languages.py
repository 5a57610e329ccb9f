"""Per-language build time, size, cold start and message latency: see
scripts/bench-languages.sh."""

import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, ROOT, free_port

PLUGINS = os.path.join(ROOT, "guest-examples", "plugins")
EXAMPLES = [
    ("rust", "counter.wasm"),
    ("python", "counter-python.wasm"),
    ("javascript", "counter-js.wasm"),
    ("c", "counter-c.wasm"),
    ("go", "counter-go.wasm"),
]


class Host:
    """`wasm-sup run FOLDER` with one plugin, and a kept-alive HTTP connection."""

    def __init__(self, folder, plugin):
        self.port = free_port()
        self.plugin = plugin
        self.log = open(os.path.join(folder, "..", "host.log"), "a")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [BIN, "run", folder, "--admin", f"127.0.0.1:{self.port}"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        self.conn = None

    def send(self, message):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.conn.request("POST", f"/v1/plugins/{self.plugin}/messages", body=message)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def first_reply(self):
        """Seconds from spawn until the plugin's first 200 reply."""
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"wasm-sup exited early; see {self.log.name}")
            try:
                status, _ = self.send(b"hello")
                if status == 200:
                    return time.monotonic() - self.started
            except (ConnectionError, OSError, http.client.HTTPException):
                self.conn = None
            time.sleep(0.002)

    def latencies(self, message, n):
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            status, body = self.send(message)
            out.append(time.perf_counter() - t0)
            if status != 200:
                sys.exit(f"{self.plugin}: {message!r} answered {status}: {body!r}")
        return out

    def stop(self):
        if self.conn is not None:
            self.conn.close()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        self.log.close()


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def bench(language, path, messages):
    work = tempfile.mkdtemp(prefix="wasm-sup-bench-lang-")
    folder = os.path.join(work, "plugins")
    os.mkdir(folder)
    plugin = f"counter-{language}"
    shutil.copy(path, os.path.join(folder, f"{plugin}.wasm"))
    try:
        host = Host(folder, plugin)
        cold = host.first_reply()
        greet = host.latencies(b"greet", messages)
        count = host.latencies(b"hello", messages)
        host.stop()
        host = Host(folder, plugin)
        warm = host.first_reply()
        host.stop()
    finally:
        shutil.rmtree(work)
    ms = lambda s: round(s * 1000, 3)
    return {
        "language": language,
        "component_bytes": os.path.getsize(path),
        "cold_start_ms": ms(cold),
        "warm_start_ms": ms(warm),
        "greet_p50_ms": ms(statistics.median(greet)),
        "greet_p99_ms": ms(pct(greet, 99)),
        "count_p50_ms": ms(statistics.median(count)),
        "count_p99_ms": ms(pct(count, 99)),
    }


def main():
    messages = int(sys.argv[1])
    build_times = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    rows = []
    for language, file in EXAMPLES:
        path = os.path.join(PLUGINS, file)
        if not os.path.exists(path):
            print(f"skipped {language}: {path} is not built", file=sys.stderr)
            continue
        row = bench(language, path, messages)
        row["build_seconds"] = build_times.get(language)
        rows.append(row)
    result = {
        "messages": messages,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "languages": rows,
    }
    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target", "bench", "languages.json"), "w") as f:
        json.dump(result, f, indent=2)
    print()
    print("| language | build | size | cold start | warm start | `greet` p50 / p99 | count (durable write) p50 / p99 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        build = f"{r['build_seconds']} s" if r["build_seconds"] is not None else "-"
        size = r["component_bytes"]
        size = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"
        print(
            f"| {r['language']} | {build} | {size} | {r['cold_start_ms']:.0f} ms "
            f"| {r['warm_start_ms']:.0f} ms | {r['greet_p50_ms']:.2f} / {r['greet_p99_ms']:.2f} ms "
            f"| {r['count_p50_ms']:.2f} / {r['count_p99_ms']:.2f} ms |"
        )


main()
