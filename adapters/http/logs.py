"""JSON log lines, and the server's logging and metrics-directory set-up.

Kept apart from ``adapters.http.observability`` because the gunicorn arbiter loads this
module (for its log formatter) and must not import prometheus-client before
``PROMETHEUS_MULTIPROC_DIR`` is set: prometheus-client picks its storage at import.
"""

from __future__ import annotations

import logging
import shutil
import traceback
from datetime import UTC, datetime
from pathlib import Path

import orjson
from gunicorn import glogging



class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...fields, "exc"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info))[-8000:]
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str = "info") -> dict:
    """A ``logging.config.dictConfig`` for the server (gunicorn's loggers included):
    JSON lines on stderr, gunicorn's own access log off (RequestLog writes ours)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "adapters.http.logs.JsonFormatter"}},
        "handlers": {"stderr": handler},
        "root": {"level": "WARNING", "handlers": ["stderr"]},
        "loggers": {
            "scimledger": {"level": level.upper(), "handlers": ["stderr"], "propagate": False},
            "gunicorn.error": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }


def prepare_multiprocess_dir(data: str | Path) -> str | None:
    """Under ``serve``: an empty ``<data>/metrics`` for prometheus-client's multiprocess
    files (``serve`` names it with ``adapters.settings.use_metrics_dir`` before any worker
    imports prometheus-client), or None when it cannot be made. Emptied at every start,
    so the files of killed workers do not pile up."""
    path = Path(data) / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a read-only data directory: each worker counts for itself
        logging.getLogger("scimledger").warning("metrics: cannot use %s (%s); /metrics shows one worker", path, error)
        return None
    return str(path)


class GunicornLogger(glogging.Logger):
    """gunicorn's logger without its access log: RequestLog writes one JSON line per
    request, and gunicorn would format its own line (then drop it) on every request."""

    def access(self, resp, req, environ, request_time) -> None:
        pass
