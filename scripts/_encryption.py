"""``scripts/bench --encryption``: the same Entra mix against scimledger with and without
its per-person encryption (issue 11), in one run.

Each round starts two fresh ``scimledger serve`` on SQLite, one after the other (the order
alternates between rounds): one as shipped (every personal value sealed with its user's
key, a key row created per new user), one with ``SCIMLEDGER_BENCH_NO_ENCRYPTION=1``. That
variable exists for this comparison only: the server then writes plain events through the
library's own mapper, and marks its store as a benchmark's plaintext store, which no normal
start will serve (adapters/store/keys.py). Everything else is the same code path.

It prints per round and as the median over rounds the server CPU per operation of each
and the ratio sealed / plaintext (the issue's bound: within 10 %).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import _benchlib as lib

PLAINTEXT = {"SCIMLEDGER_BENCH_NO_ENCRYPTION": "1"}


def compare(args, measure) -> int:
    def kinds(number: int) -> tuple[str, str]:
        return ("sealed", "plaintext") if number % 2 else ("plaintext", "sealed")

    def start(kind: str, work: Path):
        extra = PLAINTEXT if kind == "plaintext" else {}
        server = lib.StartedServer(work / "data", args.workers, args.threads, log_dir=work, extra_env=extra).start()
        server.wait_ready()
        return server

    rounds = lib.server_rounds(args.rounds, kinds, start,
                               lambda kind, server: measure(args, server.target, server.token, server.tree, started=server),
                               "scimledger-encryption")
    print("\n" + summary(rounds), flush=True)
    if args.json:
        args.json.write_text(lib.dumps({"rounds": rounds}).decode())
    return 1 if any(r[k]["errors"] for r in rounds for k in r) else 0


def summary(rounds: list[dict]) -> str:
    rows = []
    for number, row in enumerate(rounds, 1):
        sealed, plain = row["sealed"].get("server_cpu_ms_per_op"), row["plaintext"].get("server_cpu_ms_per_op")
        rows.append({"round": str(number), "sealed": sealed, "plaintext": plain,
                     "ratio": sealed / plain if sealed and plain else None,
                     "sealed_ops": row["sealed"].get("ops_per_s"), "plain_ops": row["plaintext"].get("ops_per_s")})
    median = {"round": "median"}
    for key in ("sealed", "plaintext", "ratio", "sealed_ops", "plain_ops"):
        values = [r[key] for r in rows if r[key] is not None]
        median[key] = statistics.median(values) if values else None
    columns = [("round", "round", "s"), ("sealed", "sealed CPU ms/op", ".3f"), ("plaintext", "plaintext CPU ms/op", ".3f"),
               ("ratio", "sealed/plaintext", ".3f"), ("sealed_ops", "sealed ops/s", ".0f"), ("plain_ops", "plaintext ops/s", ".0f")]
    return (f"encryption comparison (median of {len(rows)} round{'s' * (len(rows) > 1)})\n"
            + lib.format_table(rows + [median], columns))
