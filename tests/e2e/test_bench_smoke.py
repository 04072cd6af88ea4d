"""Smoke test of the benchmark scripts (issue #6): each runs at tiny sizes as a subprocess,
exits 0 and prints its tables with 0 errors. A benchmark is not a test: nothing here
asserts a timing.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.processes import run_script

pytestmark = pytest.mark.e2e  # starts real scimledger/gunicorn processes


def test_bench_replays_an_entra_cycle_against_a_server_it_starts(tmp_path):
    out = tmp_path / "bench.json"
    done = run_script(
        "bench", "--start", "--users", "20", "--groups", "3", "--members-per-group", "5",
        "--concurrency", "4", "--seed", "7", "--duration-limit", "50", "--json", str(out),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    assert re.search(r"^operation\s+count\s+errors\s+ops/s\s+p50 ms\s+p95 ms\s+p99 ms$", text, re.M), text
    for op in ("user.match(miss)", "user.create", "group.match(miss)", "group.create", "group.patch(add members)",
               "user.patch(title,department)", "user.list(100)", "user.lookup(userName eq)",
               "group.lookup(displayName eq)", "group.list(100)"):
        row = re.search(rf"^{re.escape(op)}\s+(\d+)\s+(\d+)\s", text, re.M)
        assert row, f"no row for {op}:\n{text}"
        assert int(row.group(1)) > 0 and int(row.group(2)) == 0, row.group(0)
    overall = re.search(r"^overall: (\d+) ops, (\d+) errors, [\d.]+ ops/s .*server CPU ([\d.]+) ms/op", text, re.M)
    assert overall, text
    assert int(overall.group(2)) == 0 and int(overall.group(1)) >= 20 * 2 + 3 * 2
    assert re.search(r"^server worker pid \d+: peak RSS [\d.]+ MiB", text, re.M), text
    result = json.loads(out.read_text())
    assert result["errors"] == 0 and result["truncated"] is False
    assert {p["phase"][0] for p in result["phases"]} == {"1", "2", "3", "4", "5"}


def test_bench_refuses_a_target_that_is_not_loopback():
    done = run_script("bench", "--url", "http://192.0.2.10:8080/scim/v2", "--token", "x", "--users", "1")
    assert done.returncode == 2
    assert "non-loopback" in done.stderr


def test_bench_scale_builds_replays_serves_and_measures(tmp_path):
    data = tmp_path / "scale"
    done = run_script(
        "bench_scale", "--users", "300", "--groups", "5", "--big-group", "100", "--members-per-group", "3",
        "--member-batch", "10", "--samples", "10", "--page-samples", "5", "--data", str(data),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    assert "built 300 users" in text and "replayed " in text, text
    assert re.search(r"start to ready [\d.]+ s", text), text
    for op in ("user.lookup(userName eq)", "user.list(100) near start", "user.list(100) deep",
               "group.patch(+10 members, big group)", "group.get(excludedAttributes=members)"):
        row = re.search(rf"^{re.escape(op)}\s+(\d+)\s+(\d+)\s", text, re.M)
        assert row, f"no row for {op}:\n{text}"
        assert int(row.group(1)) > 0 and int(row.group(2)) == 0, row.group(0)
    assert re.search(r"^figure\s+measured\s+target\s+met$", text, re.M), text
    assert re.search(r"^overall: \d+ ops, 0 errors$", text, re.M), text

    # and again on the same data, measuring only (with a replay into a scratch file)
    again = run_script("bench_scale", "--skip-build", "--data", str(data), "--samples", "5", "--page-samples", "3")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "replayed " in again.stdout and re.search(r"^overall: \d+ ops, 0 errors$", again.stdout, re.M)
    assert not list(data.glob("replay-check*"))


def test_bench_replay_runs_at_a_tiny_size(tmp_path):
    done = run_script("bench_replay", "--events", "2000", "--data", str(tmp_path / "bench"), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "replay directory" in done.stdout and "replay audit" in done.stdout and "events/s" in done.stdout
    assert "history of" in done.stdout


@pytest.mark.postgres
def test_bench_node_lag_measures_both_nodes_writes(postgres_url):
    done = run_script("bench_node_lag", "--store", postgres_url, "--writes", "2", "--pause", "0.2", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^writes on node ([ab]) \((delivers the feed|does not deliver[^)]*)\): 2, lag p50 -?[\d.]+ ms",
                      done.stdout, re.M)
    assert sorted(rows)[0][0] == "a" and len(rows) == 2, done.stdout
    assert {role.startswith("delivers") for _, role in rows} == {True, False}, done.stdout  # one node holds the feed
