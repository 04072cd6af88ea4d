"""Audit events as CSV rows: ``scimledger audit --format csv`` and the console's download."""

import orjson


CSV_COLUMNS = ("position", "time", "tenant", "event", "resource_type", "resource_id", "version", "user_name",
               "display_name", "actor_label", "actor", "request_id", "method", "path", "client", "user_agent",
               "changes", "note")


def csv_row(e: dict) -> tuple:
    """One event as a CSV row of CSV_COLUMNS (``scimledger audit --format csv``, the console)."""
    r, a, q = e["resource"], e["actor"], e["request"]
    return (e["position"], e["time"], e["tenant"], e["event"], r["type"], r["id"], r["version"], r.get("userName"),
            r.get("displayName"), a["label"], a["id"], q["id"], q["method"], q["path"], q["client"], q["userAgent"],
            orjson.dumps(e["changes"]).decode(), e.get("note"))
