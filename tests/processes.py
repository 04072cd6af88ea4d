"""What the tests that start real ``scimledger`` processes share."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra) -> dict:
    """This environment without settings of ours (or of the store and metrics libraries)
    that would leak into a started server, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCIMLEDGER_", "POSTGRES_", "PROMETHEUS_"))}
    return env | {k: str(v) for k, v in extra.items()}
