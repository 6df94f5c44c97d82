"""Leftovers and escapes: one daemon per state folder, workers die with the daemon,
half-written outbox files are cleaned at start, inbox symlinks are not followed.

The real daemon in this process (free ports, 127.0.0.1), and for the worker test a
real child process running the daemon's process pool, killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_support import free_port

from ecgbridge.config import load_settings
from ecgbridge.errors import ConfigError
from ecgbridge.service.daemon import Daemon

REPO = Path(__file__).resolve().parents[1]


def _daemon(root: Path, **overrides: Any) -> Daemon:
    base = {
        "inbox.path": str(root / "inbox"), "deliver.outbox.path": str(root / "outbox"),
        "state.path": str(root / "state"), "dicom.port": free_port(), "http.port": 0,
        "workers.processes": 1, "inbox.stable_seconds": 0.1, "inbox.poll_seconds": 0.05,
    }
    base.update(overrides)
    return Daemon(load_settings(None, environ={}, overrides=base))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def test_a_second_daemon_on_the_same_state_folder_is_refused(tmp_path: Path) -> None:
    first = _daemon(tmp_path, **{"dicom.enabled": False, "inbox.enabled": False})
    first.start()
    try:
        with pytest.raises(ConfigError, match=r"in use by another ecgbridge serve \(process \d+\)"):
            _daemon(tmp_path, **{"dicom.enabled": False, "inbox.enabled": False})
    finally:
        first.stop()
    again = _daemon(tmp_path, **{"dicom.enabled": False, "inbox.enabled": False})
    again.stop()  # the lock was released: a new daemon may take the folder


def test_workers_die_with_a_killed_daemon(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import os, sys
        from ecgbridge.jobs.runner import make_process_pool
        pool = make_process_pool(2)
        pids = {pool.submit(os.getpid).result() for _ in range(8)}
        print(" ".join(map(str, sorted(pids))), flush=True)
        os.kill(os.getpid(), 9)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    workers = [int(p) for p in done.stdout.split()]
    assert workers, done.stdout
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_pid_alive(p) for p in workers):
        time.sleep(0.05)
    assert not [p for p in workers if _pid_alive(p)], "worker processes outlived the daemon"


def test_half_written_outbox_files_are_removed_at_start(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    ours = outbox / ".0123456789abcdef.json.k2j4_x9a.part"
    theirs = outbox / ".someone-else.part"
    done = outbox / "0123456789abcdef.json"
    for path in (ours, theirs, done):
        path.write_text("{}")
    daemon = _daemon(tmp_path, **{"dicom.enabled": False, "inbox.enabled": False})
    daemon.start()
    daemon.stop()
    assert not ours.exists()
    assert theirs.exists() and done.exists()


@pytest.mark.parametrize("follow", [False, True])
def test_inbox_symlinks_are_not_followed_unless_allowed(tmp_path: Path, follow: bool) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not an ECG, and not in the inbox\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "link.png").symlink_to(outside)
    (inbox / "subfolder").mkdir()
    daemon = _daemon(tmp_path, **{"dicom.enabled": False, "inbox.follow_symlinks": follow})
    daemon.start()
    try:
        deadline = time.monotonic() + (10 if follow else 1.5)
        while time.monotonic() < deadline and not sum(daemon.journal.count_by_state().values()):
            time.sleep(0.05)
        jobs = sum(daemon.journal.count_by_state().values())
    finally:
        daemon.stop()
    assert outside.exists()
    if follow:
        assert jobs == 1
    else:
        assert jobs == 0
        assert (inbox / "link.png").is_symlink(), "the refused link left the inbox"


def test_a_file_received_again_is_kept_in_duplicates_and_listed_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ecgbridge.cli import main

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    daemon = _daemon(tmp_path, **{"dicom.enabled": False})
    daemon.start()
    try:
        for name in ("first_copy.txt", "second_copy.txt"):
            (tmp_path / name).write_text("the same bytes twice\n")
            os.replace(tmp_path / name, inbox / name)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(inbox.iterdir()):
                time.sleep(0.05)
        assert not any(inbox.iterdir())
        jobs = daemon.journal.list_jobs()
    finally:
        daemon.stop()
    assert len(jobs) == 1
    kept = list((tmp_path / "state" / "duplicates").iterdir())
    assert [p.name for p in kept] == [f"{jobs[0].job_id}_second_copy.txt"]
    assert main(["jobs", "list", "--state", str(tmp_path / "state")]) == 0
    listing = capsys.readouterr().out
    assert "INPUT" in listing.splitlines()[0] and "first_copy.txt" in listing


def test_a_failed_start_leaves_no_state_folder(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ,
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        done = subprocess.run(
            [sys.executable, "-m", "ecgbridge", "serve", "--state", str(tmp_path / "state"),
             "--inbox", str(tmp_path / "inbox"), "--outbox", str(tmp_path / "outbox"),
             "--dicom-port", str(port), "--http-port", "0"],
            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 1, done.stderr
    assert f"dicom.port: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()
