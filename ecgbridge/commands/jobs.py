"""``ecgbridge jobs list|show|retry|purge``: inspect and repair the daemon's job journal.

Works while the daemon runs (the journal is SQLite in WAL mode); a retried job is
picked up by the running daemon within a second.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the ``jobs`` sub-command and its actions."""
    p: argparse.ArgumentParser = sub.add_parser(
        "jobs", help="list, inspect, retry or purge the daemon's jobs",
        description="Administer the job journal in the daemon's state folder.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state", type=Path, default=None,
                        help="state folder (default: state.path of the configuration, "
                             "else ./state)")
    common.add_argument("--config", "-c", type=Path, default=None, help="YAML configuration")

    lp = actions.add_parser("list", parents=[common], help="one line per job")
    lp.add_argument("--state-filter", "--status", dest="states", default=None,
                    help="comma-separated states: received,digitized,delivered,failed,dead-letter")
    lp.add_argument("--limit", type=int, default=200, help="at most this many jobs")
    lp.set_defaults(func=run_list)

    sp = actions.add_parser("show", parents=[common],
                            help="a job's states, attempts and reasons per destination")
    sp.add_argument("job_id", help="job id (a unique prefix is enough)")
    sp.set_defaults(func=run_show)

    rp = actions.add_parser("retry", parents=[common], help="re-queue failed/dead-letter jobs")
    rp.add_argument("job_ids", nargs="*", help="job ids (prefixes); none with --all")
    rp.add_argument("--all", action="store_true", help="every failed and dead-letter job")
    rp.set_defaults(func=run_retry)

    pp = actions.add_parser("purge", parents=[common],
                            help="remove delivered jobs older than N days")
    pp.add_argument("--older-than", type=float, required=True, metavar="DAYS",
                    help="age in days of the delivery")
    pp.set_defaults(func=run_purge)

    def no_action(_args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=no_action)


def _state_dir(args: argparse.Namespace) -> Path:
    """--state, else state.path of the configuration the daemon would use
    (--config / $ECGBRIDGE_CONFIG / ECGBRIDGE_STATE__PATH), else ./state."""
    if args.state is not None:
        return Path(args.state)
    from ecgbridge.config import load_settings

    return load_settings(args.config).state.path


def _open(args: argparse.Namespace) -> Any:
    from ecgbridge.errors import ConfigError
    from ecgbridge.jobs.journal import JOURNAL_FILE, Journal

    state = _state_dir(args)
    if not (state / JOURNAL_FILE).is_file():
        raise ConfigError(f"no job journal in {state} (expected {state / JOURNAL_FILE})")
    return Journal.in_state_folder(state)


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def run_list(args: argparse.Namespace) -> int:
    """Print one line per job."""
    journal = _open(args)
    try:
        states = [s.strip() for s in args.states.split(",")] if args.states else None
        jobs = journal.list_jobs(states, limit=args.limit)
        print(f"{'JOB':16}  {'STATE':11}  {'SOURCE':6}  {'RECEIVED':19}  {'INPUT':28}  REASON")
        for job in jobs:
            reason = job.reason.replace("\n", " ")
            name = job.input_name if len(job.input_name) <= 28 else job.input_name[:27] + "…"
            print(f"{job.job_id:16}  {job.state:11}  {job.source:6}  "
                  f"{_when(job.received_at):19}  {name:28}  {reason[:80]}")
        counts = journal.count_by_state()
        print("total: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    finally:
        journal.close()
    return 0


def _resolve(journal: Any, prefix: str) -> Any:
    from ecgbridge.errors import ConfigError

    matches = journal.find(prefix)
    if not matches:
        raise ConfigError(f"no job with id {prefix!r}")
    if len(matches) > 1:
        raise ConfigError(f"job id {prefix!r} is ambiguous ({len(matches)} jobs)")
    return matches[0]


def run_show(args: argparse.Namespace) -> int:
    """Print a job and its deliveries."""
    journal = _open(args)
    try:
        job = _resolve(journal, args.job_id)
        print(f"job:              {job.job_id}")
        print(f"state:            {job.state}")
        if job.reason:
            print(f"reason:           {job.reason}")
        print(f"source:           {job.source}")
        print(f"input:            {job.input_name} ({job.input_path})")
        print(f"input key:        {job.input_key}")
        print(f"sha256:           {job.sha256}")
        print(f"digitize runs:    {job.attempts}")
        print(f"received:         {_when(job.received_at)}")
        print(f"digitized:        {_when(job.digitized_at)}")
        print(f"finished:         {_when(job.finished_at)}")
        if job.sop_instance_uid:
            print(f"SOP instance UID: {job.sop_instance_uid}")
        for fmt, path in sorted(job.files.items()):
            print(f"file {fmt + ':':12} {path}")
        for d in job.deliveries:
            line = f"delivery {d.destination}: {d.state}, {d.attempts} attempt(s)"
            if d.state == "pending" and d.attempts:
                line += f", next at {_when(d.next_attempt_at)}"
            if d.delivered_at:
                line += f", delivered {_when(d.delivered_at)}"
            print(line)
            if d.last_error:
                print(f"  last error: {d.last_error}")
            if d.detail:
                print(f"  receipt: {d.detail}")
    finally:
        journal.close()
    return 0


def run_retry(args: argparse.Namespace) -> int:
    """Re-queue failed and dead-letter jobs (failed inputs leave the quarantine)."""
    from ecgbridge.jobs.journal import DEAD_LETTER, FAILED
    from ecgbridge.jobs.store import QUARANTINE_DIR, StateFolder

    if not args.job_ids and not args.all:
        print("ecgbridge: error: give job ids or --all", file=sys.stderr)
        return 2
    journal = _open(args)
    state = StateFolder(_state_dir(args))
    try:
        jobs = (journal.list_jobs([FAILED, DEAD_LETTER], limit=1_000_000) if args.all
                else [_resolve(journal, j) for j in args.job_ids])
        retried = 0
        for job in jobs:
            if job.state not in (FAILED, DEAD_LETTER):
                print(f"{job.job_id}: {job.state}, nothing to retry")
                continue
            new_input: str | None = None
            if job.state == FAILED and job.input_path.startswith(QUARANTINE_DIR + "/"):
                quarantined = state.resolve(job.input_path)
                if quarantined.exists():
                    new_input = state.relative(state.release_from_quarantine(job.job_id,
                                                                             quarantined))
            if journal.retry(job.job_id, new_input):
                retried += 1
                print(f"{job.job_id}: re-queued")
        print(f"{retried} job(s) re-queued")
    finally:
        journal.close()
    return 0


def run_purge(args: argparse.Namespace) -> int:
    """Delete delivered jobs older than the given age, with their files."""
    from ecgbridge.jobs.store import StateFolder

    if args.older_than < 0:
        print("ecgbridge: error: --older-than must not be negative", file=sys.stderr)
        return 2
    journal = _open(args)
    state = StateFolder(_state_dir(args))
    try:
        cutoff = time.time() - args.older_than * 86400.0
        ids = journal.delivered_before(cutoff)
        removed = journal.delete(ids)
        for job_id in ids:
            state.remove_job(job_id)
        print(f"purged {removed} delivered job(s) older than {args.older_than:g} day(s)")
    finally:
        journal.close()
    return 0
