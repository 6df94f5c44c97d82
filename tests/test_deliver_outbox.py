"""Outbox folder delivery: names, atomic writes, idempotence, failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from peers import make_delivery_item

from ecgbridge.deliver.base import DeliveryItem
from ecgbridge.deliver.outbox import OutboxDestination, outbox_name
from ecgbridge.deliver.settings import OutboxSettings
from ecgbridge.encode.registry import WriteContext, resolve_writer
from ecgbridge.encode.wfdb_format import read_wfdb
from ecgbridge.errors import DeliveryError


@pytest.fixture()
def item(tmp_path: Path) -> DeliveryItem:
    return make_delivery_item(tmp_path / "work", job_id="job-0042")


def test_copies_the_configured_formats_under_the_job_id(item: DeliveryItem, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    destination = OutboxDestination(OutboxSettings(path=outbox))

    receipt = destination.deliver(item)

    assert sorted(p.name for p in outbox.iterdir()) == [
        "job-0042.dcm", "job-0042.fhir-r4.json", "job-0042.json",
    ]
    for fmt, name in (("dicom", "job-0042.dcm"), ("fhir-r4", "job-0042.fhir-r4.json"),
                      ("json", "job-0042.json")):
        assert (outbox / name).read_bytes() == Path(item.files[fmt]).read_bytes()
    assert receipt.destination == "outbox"
    assert "job-0042.dcm" in receipt.detail and str(outbox) in receipt.detail


def test_redelivery_overwrites_identically_and_leaves_no_temporary_files(
    item: DeliveryItem, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    destination = OutboxDestination(OutboxSettings(path=outbox))
    destination.deliver(item)
    first = {p.name: p.read_bytes() for p in outbox.iterdir()}

    destination.deliver(item)

    second = {p.name: p.read_bytes() for p in outbox.iterdir()}
    assert second == first
    assert not [name for name in os.listdir(outbox) if name.startswith(".")]


def test_wfdb_record_is_renamed_consistently(tmp_path: Path) -> None:
    from peers import record_ecg

    work = tmp_path / "work"
    wfdb_files = resolve_writer("wfdb")(record_ecg("A1983"), work, "encoded-stem", WriteContext())
    header = next(p for p in wfdb_files if p.suffix == ".hea")
    item = DeliveryItem(job_id="job-7", files={"wfdb": header})
    outbox = tmp_path / "outbox"

    OutboxDestination(OutboxSettings(path=outbox, formats=["wfdb"])).deliver(item)

    assert sorted(p.name for p in outbox.iterdir()) == ["job-7.dat", "job-7.hea"]
    copied = read_wfdb(outbox / "job-7.hea")
    original = read_wfdb(header)
    assert copied.n_samples == original.n_samples == 5000
    assert (copied.signals == original.signals).all()


def test_missing_format_is_a_permanent_error(item: DeliveryItem, tmp_path: Path) -> None:
    destination = OutboxDestination(OutboxSettings(path=tmp_path / "o", formats=["dicom", "csv"]))

    with pytest.raises(DeliveryError) as caught:
        destination.deliver(item)

    assert caught.value.retryable is False
    assert "job-0042 has no csv file" in str(caught.value)
    assert not (tmp_path / "o" / "job-0042.dcm").exists()


@pytest.mark.parametrize("job_id", ["../escape", "a/b", "", ".hidden"])
def test_unsafe_job_ids_are_refused(item: DeliveryItem, tmp_path: Path, job_id: str) -> None:
    unsafe = DeliveryItem(job_id=job_id, files=item.files)
    with pytest.raises(DeliveryError) as caught:
        OutboxDestination(OutboxSettings(path=tmp_path / "o")).deliver(unsafe)
    assert caught.value.retryable is False
    assert not (tmp_path / "escape.dcm").exists()


def test_unwritable_outbox_is_retryable(item: DeliveryItem, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outbox folder should be", encoding="utf-8")
    destination = OutboxDestination(OutboxSettings(path=blocker / "outbox"))

    with pytest.raises(DeliveryError) as caught:
        destination.deliver(item)

    assert caught.value.retryable is True
    assert "job-0042" in str(caught.value)


def test_outbox_names() -> None:
    assert outbox_name("j1", "fhir-r5", Path("x.json")) == "j1.fhir-r5.json"
    assert outbox_name("j1", "csv", Path("x.csv")) == "j1.csv"
    assert outbox_name("j1", "overlay", Path("x_overlay.png")) == "j1.overlay.png"


def test_multi_page_overlays_are_all_copied(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    pages = {
        "scan-7.overlay.png": b"page one",
        "scan-7.p2.overlay.png": b"page two",
        "scan-7.p3.overlay.png": b"page three",
        "scan-70.p2.overlay.png": b"another job",  # same prefix, other stem
    }
    for name, data in pages.items():
        (work / name).write_bytes(data)
    item = DeliveryItem(job_id="job-9", files={"overlay": work / "scan-7.overlay.png"})
    outbox = tmp_path / "outbox"

    OutboxDestination(OutboxSettings(path=outbox, formats=["overlay"])).deliver(item)

    assert {p.name: p.read_bytes() for p in outbox.iterdir()} == {
        "job-9.overlay.png": b"page one",
        "job-9.p2.overlay.png": b"page two",
        "job-9.p3.overlay.png": b"page three",
    }


def test_naming_pattern_names_the_files_and_is_checked(tmp_path: Path) -> None:
    import dataclasses
    import time as _time

    from pydantic import ValidationError

    base = make_delivery_item(tmp_path / "work", job_id="0123456789abcdef")
    received = _time.mktime((2026, 12, 4, 7, 30, 0, 0, 0, 0)) - _time.timezone
    item = dataclasses.replace(base, input_name="Doe, Jane (scan 2).pdf", received_at=received)
    outbox = tmp_path / "outbox"
    settings = OutboxSettings(path=outbox, naming="{date}_{input}_{job_id}", formats=["json"])
    OutboxDestination(settings).deliver(item)
    assert [p.name for p in outbox.iterdir()] == ["20261204_Doe_Jane_scan_2_0123456789abcdef.json"]
    for bad, message in (("{input}", "must contain {job_id}"), ("{job_id}_{who}", "unknown"),
                         ("x/{job_id}", "without folders"), ("{job_id", "not a naming")):
        with pytest.raises(ValidationError, match=message):
            OutboxSettings(path=outbox, naming=bad)
