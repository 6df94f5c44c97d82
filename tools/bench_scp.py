#!/usr/bin/env python3
"""Benchmark the daemon's DICOM intake against dcmtk's storescp on this machine.

1. Receive rate: the same N Secondary Capture objects are sent with one
   ``storescu`` association (all files in one call) to dcmtk's ``storescp`` and
   to ecgbridge's Storage SCP (the exact store path of ``ecgbridge serve``:
   durable write with fsync of file and folder, then a journal commit with
   ``synchronous=FULL``). Rounds alternate between the two; the median is reported.
2. End-to-end latency: ``ecgbridge serve`` runs as a subprocess with an outbox; K
   rendered ECG pages are sent by storescu and the time from receipt to delivery
   of each job is read from the journal.

Usage::

    PYTHONPATH=. python tools/bench_scp.py [--objects 200] [--rounds 3] [--pages 6]

Prints a table and writes ``--json FILE`` if given. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: dcmtk leaves Nagle's algorithm on unless TCP_NODELAY is set; without it every small
#: object waits for a delayed ACK (~40 ms) and storescp looks 10x slower than it is.
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Wait until 127.0.0.1:port accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def write_sc(path: Path, image: np.ndarray) -> str:
    """Write an RGB Secondary Capture object; return its SOP Instance UID."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.SOPClassUID = SC_IMAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Bench^Page"
    ds.PatientID = "BENCH"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.Rows, ds.Columns = image.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def send(port: int, aec: str, files: list[Path]) -> float:
    """Send `files` in one association; return the wall time in seconds."""
    t0 = time.perf_counter()
    done = subprocess.run([STORESCU, "-aet", "BENCH", "-aec", aec, "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=600,
                          env=DCMTK_ENV)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr[-1000:]}")
    return elapsed


def round_storescp(files: list[Path], work: Path, bit_preserving: bool = False) -> float:
    """One round against dcmtk's storescp (writes every object to a folder).

    With `bit_preserving` storescp runs with ``+B`` (writes the received bytes
    without decoding them), its fastest mode.
    """
    out = work / "storescp-out"
    out.mkdir(exist_ok=True)
    port = free_port()
    mode = ["+B"] if bit_preserving else []
    proc = subprocess.Popen([STORESCP, *mode, "-aet", "STORESCP", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        wait_for_port(port)
        elapsed = send(port, "STORESCP", files)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    stored = len(list(out.iterdir()))
    if stored != len(files):
        raise RuntimeError(f"storescp stored {stored} of {len(files)} objects")
    for p in out.iterdir():
        p.unlink()
    return elapsed


def round_ecgbridge(files: list[Path], work: Path) -> float:
    """One round against ecgbridge's Storage SCP (durable store + journal)."""
    import shutil

    from ecgbridge.config import DicomScpSettings
    from ecgbridge.jobs.intake import Intake
    from ecgbridge.jobs.journal import Journal
    from ecgbridge.jobs.store import StateFolder
    from ecgbridge.sources.dicom_scp import StorageScp

    state_dir = work / "ecgbridge-state"
    shutil.rmtree(state_dir, ignore_errors=True)
    state = StateFolder(state_dir)
    journal = Journal.in_state_folder(state_dir)
    scp = StorageScp(DicomScpSettings(port=free_port()), Intake(state, journal))
    scp.start()
    try:
        elapsed = send(scp.port, "ECGBRIDGE", files)
    finally:
        scp.stop()
    jobs = sum(journal.count_by_state().values())
    journal.close()
    if jobs != len(files):
        raise RuntimeError(f"ecgbridge journaled {jobs} of {len(files)} objects")
    return elapsed


def receive_rate(n_objects: int, rounds: int, height: int, width: int, work: Path
                 ) -> dict[str, Any]:
    """Objects per second of both SCPs (median over rounds)."""
    rng = np.random.default_rng(0)
    objects = work / "objects"
    objects.mkdir()
    base = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    files = []
    for i in range(n_objects):
        image = base.copy()
        image[0, 0, 0] = i % 256  # distinct objects
        path = objects / f"sc_{i:04d}.dcm"
        write_sc(path, image)
        files.append(path)
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    times: dict[str, list[float]] = {"storescp": [], "storescp+B": [], "ecgbridge": []}
    for _ in range(rounds):
        times["storescp"].append(round_storescp(files, work))
        times["storescp+B"].append(round_storescp(files, work, bit_preserving=True))
        times["ecgbridge"].append(round_ecgbridge(files, work))
    result: dict[str, Any] = {"objects": n_objects, "object_mb": round(size_mb / n_objects, 3),
                              "rounds": rounds}
    for name, values in times.items():
        med = statistics.median(values)
        result[name] = {"seconds": [round(v, 3) for v in values],
                        "objects_per_s": round(n_objects / med, 1),
                        "mb_per_s": round(size_mb / med, 1)}
    result["ratio"] = round(result["ecgbridge"]["objects_per_s"]
                            / result["storescp"]["objects_per_s"], 3)
    result["ratio_vs_bit_preserving"] = round(result["ecgbridge"]["objects_per_s"]
                                              / result["storescp+B"]["objects_per_s"], 3)
    return result


def end_to_end(n_pages: int, work: Path, workers: int) -> dict[str, Any]:
    """Latency receipt -> delivery of rendered ECG pages through ``ecgbridge serve``."""
    from ecgbridge.report.bench import load_record
    from ecgbridge.testing.render import render_page

    records_dir = REPO / "tests" / "data" / "records"
    names = sorted(p.stem for p in records_dir.glob("*.hea"))
    pages = work / "pages"
    pages.mkdir()
    files = []
    for i in range(n_pages):
        signals, fs = load_record(records_dir, names[i % len(names)])
        page = render_page(signals, fs, layout="3x4+II", dpi=200, seed=i, noise_sigma=float(i))
        path = pages / f"page_{i}.dcm"
        write_sc(path, np.asarray(page.image))
        files.append(path)
    root = work / "daemon"
    root.mkdir()
    dicom_port, http_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "ecgbridge", "serve", "--inbox", str(root / "inbox"),
           "--outbox", str(root / "outbox"), "--state", str(root / "state"),
           "--dicom-port", str(dicom_port), "--http-port", str(http_port),
           "--workers", str(workers)]
    log = open(root / "daemon.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for_port(dicom_port, timeout=60)
        time.sleep(3.0)  # let the spawned workers import the digitizer
        t_send = time.time()
        send(dicom_port, "ECGBRIDGE", files)
        db_path = root / "state" / "journal.sqlite3"
        deadline = time.monotonic() + 120 + 60 * n_pages
        rows: list[sqlite3.Row] = []
        while time.monotonic() < deadline:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT state, received_at, digitized_at, finished_at, reason "
                              "FROM jobs").fetchall()
            db.close()
            if len(rows) == n_pages and all(
                    r["state"] in ("delivered", "failed", "dead-letter") for r in rows):
                break
            time.sleep(0.2)
        t_done = time.time()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    delivered = [r for r in rows if r["state"] == "delivered"]
    latencies = [r["finished_at"] - r["received_at"] for r in delivered]
    digitize = [r["digitized_at"] - r["received_at"] for r in delivered]
    return {
        "pages": n_pages,
        "workers": workers,
        "delivered": len(delivered),
        "failed": [r["reason"] for r in rows if r["state"] != "delivered"],
        "latency_s_median": round(statistics.median(latencies), 2) if latencies else None,
        "latency_s_max": round(max(latencies), 2) if latencies else None,
        "received_to_digitized_s_median": round(statistics.median(digitize), 2)
        if digitize else None,
        "batch_wall_s": round(t_done - t_send, 2),
    }


def main() -> int:
    """Run both benchmarks and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=200, help="objects per receive round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per SCP (median reported)")
    ap.add_argument("--size", default="850x1100", help="object image HEIGHTxWIDTH (RGB)")
    ap.add_argument("--pages", type=int, default=6, help="ECG pages for the latency run")
    ap.add_argument("--workers", type=int, default=None, help="daemon worker processes")
    ap.add_argument("--skip-latency", action="store_true", help="only the receive rate")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="ecgbridge-bench-") as tmp:
        work = Path(tmp)
        results: dict[str, Any] = {"receive": receive_rate(args.objects, args.rounds, height,
                                                           width, work)}
        r = results["receive"]
        print(f"receive rate, {r['objects']} objects of {r['object_mb']} MB in one association, "
              f"median of {r['rounds']} rounds:")
        for name in ("storescp", "storescp+B", "ecgbridge"):
            print(f"  {name:10} {r[name]['objects_per_s']:8.1f} objects/s "
                  f"{r[name]['mb_per_s']:7.1f} MB/s  rounds {r[name]['seconds']}")
        print(f"  ratio ecgbridge/storescp = {r['ratio']:.2f} (target >= 0.5); "
              f"vs storescp +B = {r['ratio_vs_bit_preserving']:.2f}")
        if not args.skip_latency:
            workers = args.workers or max(1, os.cpu_count() or 1)
            results["end_to_end"] = end_to_end(args.pages, work, workers)
            e = results["end_to_end"]
            print(f"end-to-end, {e['pages']} SC pages, {e['workers']} worker(s): "
                  f"{e['delivered']} delivered, latency median {e['latency_s_median']} s, "
                  f"max {e['latency_s_max']} s, batch {e['batch_wall_s']} s")
            if e["failed"]:
                print(f"  failed: {e['failed']}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
