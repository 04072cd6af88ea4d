"""Structured logs and Prometheus metrics for the people on call.

* ``adapters.http.logs.JsonFormatter``: every log record as one JSON object on one line.
* ``RequestLog``: falcon middleware, first in the chain: one log line per request
  (``scimledger.access``: request id, method, route template, status, duration, tenant,
  client address) and the request metrics. Never a body, a header value, a query
  string or a path with its ids: the route *template* only.
* ``Metrics``: ``GET /metrics`` in Prometheus' text format. Under ``scimledger serve``
  (several gunicorn workers) the counters live in prometheus-client's multiprocess
  files under ``<data>/metrics`` (``PROMETHEUS_MULTIPROC_DIR``, emptied at every start)
  and every worker's scrape sums all of them. The projection lag and the log head are
  read from the store at scrape time.
* ``count_events`` / ``count_retry``: the two observers ``domain.service.Ledger`` takes
  (the domain knows no Prometheus); the composition root passes them to the ledger.

prometheus-client chooses its storage (one process, or multiprocess files) when it is
first imported, from ``PROMETHEUS_MULTIPROC_DIR``. This module is imported by every
command, the gunicorn arbiter included, before ``serve`` has named that directory; so it
imports prometheus-client only when a metric is first used (``_meters``), in a worker.

Recording a metric never fails a request: a full or read-only data directory makes the
multiprocess files unwritable, and the request must still get its SCIM answer (503).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from types import SimpleNamespace

import falcon

access_log = logging.getLogger("scimledger.access")
log = logging.getLogger("scimledger")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_loaded: SimpleNamespace | None = None
_loading = threading.Lock()


def _meters() -> SimpleNamespace:
    """The metrics, created at first use (see the module docstring for why not at import)."""
    global _loaded
    if _loaded is None:
        with _loading:
            if _loaded is None:
                _loaded = _create_meters()
    return _loaded


def _create_meters() -> SimpleNamespace:
    # Imported here, not at the top: prometheus-client picks its storage at import (above).
    import prometheus_client
    from prometheus_client import values

    multiprocess = values.ValueClass is not values.MutexValue
    if multiprocess:
        _allocate_mmap_files()
    return SimpleNamespace(
        prometheus=prometheus_client,
        multiprocess=multiprocess,
        requests=_metric(
            prometheus_client.Counter, "scimledger_http_requests",
            "HTTP requests answered, by method, route template and status", ["method", "route", "status"],
        ),
        latency=_metric(
            prometheus_client.Histogram, "scimledger_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template", ["method", "route"],
            buckets=LATENCY_BUCKETS,
        ),
        events=_metric(prometheus_client.Counter, "scimledger_events_appended", "Events appended to the event store by this node"),
        retries=_metric(
            prometheus_client.Counter, "scimledger_version_conflict_retries",
            "Writes retried because another writer changed the same aggregate first",
        ),
    )


def __getattr__(name: str):
    """``REQUESTS``, ``LATENCY``, ``EVENTS``, ``RETRIES``: the metrics by their old names."""
    if name in ("REQUESTS", "LATENCY", "EVENTS", "RETRIES"):
        return getattr(_meters(), name.lower())
    raise AttributeError(name)


def open_metric_files() -> None:
    """Open this process's multiprocess files now rather than at its first request
    (``serve``'s workers, before they serve). A type's file opens with its first value:
    the unlabelled counters make theirs; the latency histogram gets the series of
    ``GET /readyz``, which every worker answers, at zero."""
    meters = _meters()
    if meters.multiprocess and meters.latency is not None:
        try:
            meters.latency.labels("GET", "/readyz")
        except OSError:  # a full or read-only data directory: as at a request, no metric
            log.warning("metric files unavailable: the multiprocess directory cannot be written")


def _allocate_mmap_files() -> None:
    """prometheus-client's multiprocess files are sparse files written through mmap: on a
    full disk a write to a page the filesystem cannot back kills the worker with SIGBUS
    (found by tests/e2e/test_full_disk.py on a full tmpfs). Allocate their blocks
    for real (posix_fallocate) before they are mapped or grown, so a full disk is an
    OSError (caught: the metric is skipped) instead of a dead worker."""
    from prometheus_client import mmap_dict, values  # see _create_meters

    if getattr(values.MmapedDict, "allocated", False):
        return

    class AllocatedMmapedDict(mmap_dict.MmapedDict):
        allocated = True

        def __init__(self, filename, read_mode=False):
            if not read_mode:
                _reserve(filename, mmap_dict._INITIAL_MMAP_SIZE)
            super().__init__(filename, read_mode)

        def _init_value(self, key):
            needed = self._used + len(key.encode("utf-8")) + 32
            capacity = self._capacity
            while needed > capacity:
                capacity *= 2
            if capacity != self._capacity:
                _reserve(self._fname, capacity)
            super()._init_value(key)

    values.MmapedDict = AllocatedMmapedDict
    values.ValueClass = values.get_value_class()


def _reserve(filename: str, size: int) -> None:
    fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # no fallocate here: as before
            raise
    finally:
        os.close(fd)


def _metric(factory, *args, **kwargs):
    """A metric, or None when its storage cannot be created (full or read-only disk)."""
    try:
        return factory(*args, **kwargs)
    except OSError:
        log.warning("metric %s unavailable: its multiprocess file cannot be written", args[0])
        return None


# -- the request middleware ---------------------------------------------------------------


class RequestLog:
    """One JSON log line and the metrics of every request (put it first in the chain).

    ``router``: the app's router (``falcon.App(router=...)``), which names the route of a
    request refused before routing (401, 429).
    """

    def __init__(self, router=None):
        self.router = router

    def route_of(self, req: falcon.Request) -> str:
        if req.uri_template:
            return req.uri_template
        if self.router is not None:
            try:
                found = self.router.find(req.path, req)
            except Exception:  # noqa: BLE001
                found = None
            if found:
                return found[3]
        return "(unmatched)"

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        started = getattr(req.context, "started", None)
        elapsed = time.perf_counter() - started if started is not None else 0.0
        route = self.route_of(req)
        status = resp.status_code
        try:
            meters = _meters()
            meters.requests.labels(req.method, route, str(status)).inc()
            meters.latency.labels(req.method, route).observe(elapsed)
        except Exception:  # noqa: BLE001 - metrics must never fail a request
            pass
        fields = {
            "request_id": getattr(req.context, "request_id", None),
            "method": req.method,
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "tenant": getattr(req.context, "tenant", None),
            "client": req.remote_addr,
        }
        level = logging.ERROR if status >= 500 else logging.INFO
        access_log.log(level, "%s %s %s", req.method, route, status, extra={"fields": fields})


# -- /metrics -----------------------------------------------------------------------------


class ProjectionCollector:
    """Read at scrape time: the log head, and how far this node's directory trails it."""

    def __init__(self, directory):
        self.directory = directory

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily  # see _create_meters

        try:
            head = self.directory.recorder.max_notification_id() or 0
            position = self.directory.position()
        except Exception:  # noqa: BLE001 - a scrape must not fail with the store
            return
        yield GaugeMetricFamily("scimledger_event_log_head", "Position of the last event in the event log", value=head)
        yield GaugeMetricFamily("scimledger_projection_position", "Position the directory projection has reached",
                                value=position)
        yield GaugeMetricFamily("scimledger_projection_lag_events",
                                "Log positions the directory projection trails the event log by",
                                value=max(head - position, 0))


class Metrics:
    def __init__(self, directory):
        self.projection = ProjectionCollector(directory)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        meters = _meters()
        prometheus = meters.prometheus
        registry = prometheus.CollectorRegistry()
        registry.register(self.projection)
        if meters.multiprocess:
            from prometheus_client import multiprocess  # see _create_meters

            multiprocess.MultiProcessCollector(registry)
            body = prometheus.generate_latest(registry)
        else:
            body = prometheus.generate_latest(prometheus.REGISTRY) + prometheus.generate_latest(registry)
        resp.content_type = prometheus.CONTENT_TYPE_LATEST
        resp.data = body


def count_events(count: int) -> None:
    """``Ledger(on_recorded=...)``: events appended by a save."""
    try:
        _meters().events.inc(count)
    except Exception:  # noqa: BLE001
        pass


def count_retry() -> None:
    """``Ledger(on_retry=...)``: a write retried after a version conflict."""
    try:
        _meters().retries.inc()
    except Exception:  # noqa: BLE001
        pass
