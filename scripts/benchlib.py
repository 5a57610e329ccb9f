"""What the benchmark scripts under scripts/ share."""

import os
import socket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "wasm-sup")


def free_port():
    """A free loopback port (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
