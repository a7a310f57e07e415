"""The seed example end to end: the valid contact list, from event to completed run.

Four real steps (validate, enrich, upsert into SQLite, send mail to a local SMTP sink).

    python -m bench.seed_example [--runs 20] [--write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from bench.harness import ROOT, run_loop, running_engine, write_results
from stepstream.devsmtp import MailSink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    data = {"file": str(ROOT / "examples" / "data" / "contacts_valid.csv"),
            "user_email": "owner@example.com"}
    with tempfile.TemporaryDirectory() as tmp, MailSink() as mail, running_engine(
            "examples.contacts", STEPSTREAM_SMTP_PORT=str(mail.port),
            CONTACTS_DB=f"{tmp}/contacts.db", STEPSTREAM_EXAMPLE_OUTPUT_DIR=tmp) as cluster:
        result = run_loop(cluster.settings, "process-contacts-csv-upload",
                          "api/contact_list.uploaded", data, runs=args.runs)
    p50, p95, p99 = (result["latency_ms"][q] for q in ("p50", "p95", "p99"))
    table = ("| runs | e2e p50 ms | p95 ms | p99 ms |\n|---|---|---|---|\n"
             f"| {args.runs} | {p50:.1f} | {p95:.1f} | {p99:.1f} |")
    print(table)
    if args.write:
        write_results("Seed example (valid CSV, 4 steps), event to completed",
                      f"python -m bench.seed_example --runs {args.runs} --write", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
