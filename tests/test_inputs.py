"""load_input: every supported format, format sniffing, DICOM identity, bad-input guards.

All fixtures are generated here (Pillow, pydicom, matplotlib's PDF backend) except
the MIT vector PDFs in tests/data/vector_pdf.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from hashlib import md5
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)
from vector_pdf_maker import PageSpec, Strip, make_pdf

from ecgbridge.codes import (
    ENCAPSULATED_PDF,
    MULTIFRAME_GRAYSCALE_BYTE_SC,
    VL_PHOTOGRAPHIC_IMAGE,
)
from ecgbridge.codes import SECONDARY_CAPTURE_IMAGE as SECONDARY_CAPTURE
from ecgbridge.errors import ImageTooLargeError, InputError, UnsupportedInputError
from ecgbridge.inputs.load import load_input

SCHILLER = Path(__file__).parent / "data" / "vector_pdf" / "schiller_6x1_2pages.pdf"
TWELVE_LEAD_ECG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.9.1.1"
MPEG2_MAIN_PROFILE = "1.2.840.10008.1.2.4.100"


def _gradient(h: int = 60, w: int = 80) -> np.ndarray:
    """A smooth RGB test picture (JPEG-friendly) with distinct channels."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)],
                    axis=2).astype(np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- raster


@pytest.mark.parametrize("fmt, media_type", [
    ("PNG", "image/png"), ("BMP", "image/bmp"), ("TIFF", "image/tiff"),
])
def test_lossless_rgb_formats_round_trip(fmt: str, media_type: str) -> None:
    picture = _gradient()
    data = _encode(Image.fromarray(picture), fmt)
    loaded = load_input(data, name=f"page.{fmt.lower()}")
    assert loaded.source.media_type == media_type
    assert loaded.source.sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.source.name == f"page.{fmt.lower()}"
    (page,) = loaded.pages
    assert page.image.dtype == np.uint8
    assert np.array_equal(page.image, picture)


def test_jpeg_decodes_close_to_the_original() -> None:
    picture = _gradient()
    loaded = load_input(_encode(Image.fromarray(picture), "JPEG", quality=95))
    assert loaded.source.media_type == "image/jpeg"
    diff = np.abs(loaded.pages[0].image.astype(int) - picture.astype(int))
    assert diff.mean() < 3.0


def test_format_comes_from_the_bytes_not_the_extension(tmp_path: Path) -> None:
    misnamed = tmp_path / "scan.pdf"
    misnamed.write_bytes(_encode(Image.fromarray(_gradient()), "PNG"))
    loaded = load_input(misnamed)
    assert loaded.source.media_type == "image/png"
    assert loaded.source.name == "scan.pdf"


def test_grey_palette_and_sixteen_bit_images_become_rgb() -> None:
    grey = (np.arange(60 * 80).reshape(60, 80) % 256).astype(np.uint8)
    page = load_input(_encode(Image.fromarray(grey, "L"), "PNG")).pages[0]
    assert page.image.shape == (60, 80, 3)
    assert np.array_equal(page.image[:, :, 0], grey) and np.array_equal(page.image[:, :, 2], grey)

    palette = Image.fromarray(_gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    page = load_input(_encode(palette, "PNG")).pages[0]
    assert np.array_equal(page.image, np.asarray(palette.convert("RGB")))

    ramp = np.tile(np.linspace(0, 65535, 80).astype(np.uint16), (60, 1))
    page = load_input(_encode(Image.fromarray(ramp), "PNG")).pages[0]
    assert page.image.dtype == np.uint8
    assert page.image[0, 0, 0] == 0 and page.image[0, -1, 0] == 255
    assert np.all(np.diff(page.image[0, :, 0].astype(int)) >= 0)


def test_transparency_is_composited_on_white() -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:, :5] = (0, 0, 0, 255)  # opaque black left half
    rgba[:, 5:] = (0, 0, 0, 0)  # transparent right half
    page = load_input(_encode(Image.fromarray(rgba, "RGBA"), "PNG")).pages[0]
    assert np.all(page.image[:, :5] == 0)
    assert np.all(page.image[:, 5:] == 255)


def test_exif_orientation_is_applied() -> None:
    picture = Image.fromarray(_gradient(20, 40))  # 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    page = load_input(_encode(picture, "JPEG", exif=exif, quality=95)).pages[0]
    assert page.image.shape == (40, 20, 3)


def test_multi_page_tiff_gives_one_page_per_tiff_page() -> None:
    first = Image.fromarray(np.full((30, 40, 3), 10, np.uint8))
    second = Image.fromarray(np.full((50, 20, 3), 200, np.uint8))
    data = _encode(first, "TIFF", save_all=True, append_images=[second])
    loaded = load_input(data)
    assert loaded.source.pages == 2
    assert [p.index for p in loaded.pages] == [0, 1]
    assert loaded.pages[0].image.shape == (30, 40, 3) and loaded.pages[0].image[0, 0, 0] == 10
    assert loaded.pages[1].image.shape == (50, 20, 3) and loaded.pages[1].image[0, 0, 0] == 200


def test_arrays_grey_rgba_and_float_are_accepted() -> None:
    grey = np.full((5, 6), 7, np.uint8)
    loaded = load_input(grey)
    assert loaded.pages[0].image.shape == (5, 6, 3) and loaded.source.sha256 == ""
    assert loaded.source.name == "<array>"
    rgba = np.zeros((4, 4, 4), np.uint8)
    assert np.all(load_input(rgba, name="a").pages[0].image == 255)  # fully transparent
    unit = np.full((3, 3, 3), 0.5)
    assert np.all(load_input(unit).pages[0].image == 128)
    with pytest.raises(InputError, match=r"\(h, w\)"):
        load_input(np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(InputError, match="NaN"):
        load_input(np.full((3, 3), np.nan))


# ------------------------------------------------------------------------------- PDF


def test_vector_pdf_pages_are_rendered_with_paths_and_texts() -> None:
    loaded = load_input(SCHILLER)
    assert loaded.source.media_type == "application/pdf"
    assert loaded.source.pages == 2
    page = loaded.pages[0]
    # A4 stored portrait with /Rotate 90: displayed (and rendered) landscape.
    assert (round(page.width_mm), round(page.height_mm)) == (297, 210)
    assert page.image.shape[1] > page.image.shape[0]
    assert page.dpi == pytest.approx(200.0)
    texts = {t.text for t in page.texts}
    assert {"I", "II", "III", "aVR", "aVL", "aVF"} <= texts
    assert "25 mm/s, 10 mm/mV" in texts
    long_paths = [p for p in page.paths if p.points.shape[0] > 500]
    assert len(long_paths) == 6
    assert all(p.line_width_mm > 0 for p in long_paths)
    assert all(max(p.stroke_rgb) < 0.1 for p in long_paths)


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_pdf_paths_line_up_with_the_rendered_image(rotate: int) -> None:
    # A thick diagonal stroke and a label, drawn upright in display millimetres.
    stroke = np.array([[40.0, 30.0], [150.0, 120.0], [250.0, 60.0]])
    spec = PageSpec(strips=[], texts=(("V1", 200.0, 150.0),), pulse="none", grid=False,
                    extra_lines=(stroke,))
    loaded = load_input(make_pdf([spec], fs=500.0, rotate=rotate))
    (page,) = loaded.pages
    assert page.image.shape[1] > page.image.shape[0]  # displayed landscape whatever /Rotate
    (path,) = page.paths
    assert np.allclose(path.points, stroke, atol=0.01)
    scale = page.dpi / 25.4
    grey = page.image.mean(axis=2)
    for t in np.linspace(0.0, 1.0, 25):
        x, y = (stroke[1] * t + stroke[0] * (1 - t)) * scale
        assert grey[int(round(y)), int(round(x))] < 128
    (label,) = page.texts
    assert label.text == "V1"
    cx, cy = (label.box_mm[0] + label.box_mm[2]) / 2, (label.box_mm[1] + label.box_mm[3]) / 2
    assert abs(cx - 200.0) < 3.0 and abs(cy - 150.0) < 3.0


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_paths_follow_an_offset_crop_box(rotate: int) -> None:
    import pypdfium2 as pdfium

    stroke = np.array([[60.0, 50.0], [150.0, 120.0], [240.0, 70.0]])
    spec = PageSpec(strips=[], pulse="none", grid=False, extra_lines=(stroke,))
    document = pdfium.PdfDocument(make_pdf([spec], fs=500.0, rotate=rotate))
    page = document[0]
    left, bottom, right, top = page.get_mediabox()
    page.set_cropbox(left + 40, bottom + 30, right - 20, top - 50)  # points, stored frame
    buffer = io.BytesIO()
    document.save(buffer)

    (loaded,) = load_input(buffer.getvalue()).pages
    (path,) = loaded.paths
    mm = 25.4 / 72
    assert (loaded.width_mm, loaded.height_mm) == pytest.approx(
        ((297 - 60 * mm, 210 - 80 * mm) if rotate in (0, 180) else (297 - 80 * mm, 210 - 60 * mm)),
        abs=0.01,
    )
    grey = loaded.image.mean(axis=2)
    scale = loaded.dpi / 25.4
    for a, b in zip(path.points[:-1], path.points[1:], strict=True):
        for t in np.linspace(0.0, 1.0, 12):
            x, y = np.round((a * (1 - t) + b * t) * scale).astype(int)
            assert grey[y - 1:y + 2, x - 1:x + 2].min() < 100  # a 0.2 mm line, anti-aliased


def test_paths_and_text_inside_a_transformed_form_xobject() -> None:
    import pypdfium2 as pdfium

    stroke = np.array([[40.0, 30.0], [150.0, 120.0], [250.0, 60.0]])
    spec = PageSpec(strips=[], texts=(("V1", 200.0, 150.0),), pulse="none", grid=False,
                    extra_lines=(stroke,))
    source = pdfium.PdfDocument(make_pdf([spec], fs=500.0))
    target = pdfium.PdfDocument.new()
    form = source.page_as_xobject(0, target).as_pageobject()
    form.transform(pdfium.PdfMatrix().scale(0.5, 0.5).translate(100, 50))  # in points
    new_page = target.new_page(842, 595)
    new_page.insert_obj(form)
    new_page.gen_content()
    buffer = io.BytesIO()
    target.save(buffer)

    (page,) = load_input(buffer.getvalue()).pages
    mm_per_pt = 25.4 / 72
    expected_x = 0.5 * stroke[:, 0] + 100 * mm_per_pt
    # y up in the source page (210 mm high), scaled, shifted, then y down on the new page.
    expected_y = 595 * mm_per_pt - (0.5 * (210.0 - stroke[:, 1]) + 50 * mm_per_pt)
    (path,) = page.paths
    assert np.allclose(path.points, np.column_stack([expected_x, expected_y]), atol=0.01)
    assert path.line_width_mm == pytest.approx(0.5 * 0.6 * mm_per_pt, rel=0.01)
    (label,) = page.texts
    centre = ((label.box_mm[0] + label.box_mm[2]) / 2, (label.box_mm[1] + label.box_mm[3]) / 2)
    assert abs(centre[0] - (0.5 * 200.0 + 100 * mm_per_pt)) < 2.0
    assert abs(centre[1] - (595 * mm_per_pt - (0.5 * 60.0 + 50 * mm_per_pt))) < 2.0


def test_bezier_curves_are_flattened_onto_the_curve() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    control = np.array([[20.0, 100.0], [60.0, 20.0], [140.0, 20.0], [180.0, 100.0]])
    fig = plt.figure(figsize=(200 / 25.4, 150 / 25.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 200)
    ax.set_ylim(150, 0)
    ax.axis("off")
    curve = MplPath(control, [MplPath.MOVETO, MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4])
    ax.add_patch(PathPatch(curve, fill=False, lw=1.0, edgecolor="k"))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="pdf")
    plt.close(fig)

    (path,) = load_input(buffer.getvalue()).pages[0].paths
    assert path.points.shape[0] > 5
    t = np.linspace(0, 1, 201)[:, None]
    exact = ((1 - t) ** 3 * control[0] + 3 * (1 - t) ** 2 * t * control[1]
             + 3 * (1 - t) * t ** 2 * control[2] + t ** 3 * control[3])
    distance = np.min(np.linalg.norm(path.points[:, None, :] - exact[None], axis=2), axis=1)
    assert distance.max() < 0.05
    assert np.allclose(path.points[[0, -1]], control[[0, 3]], atol=0.01)
    # The curve's apex (t = 0.5, y = 40 mm) is represented, not just the end points.
    assert path.points[:, 1].min() < 41.0


def test_scanned_pdf_is_rendered_at_the_scan_resolution() -> None:
    scan = Image.fromarray(np.tile(_gradient(), (5, 5, 1)))  # 400 x 300 px
    buffer = io.BytesIO()
    scan.save(buffer, format="PDF", resolution=50.0)  # 8 x 6 inch page
    (page,) = load_input(buffer.getvalue()).pages
    assert page.paths == ()
    assert page.dpi == pytest.approx(200.0)  # never below the default
    buffer = io.BytesIO()
    scan.save(buffer, format="PDF", resolution=300.0)  # 1.33 x 1 inch page
    (page,) = load_input(buffer.getvalue()).pages
    assert page.dpi == pytest.approx(300.0)
    assert page.image.shape == (300, 400, 3)
    # Pillow stores RGB pages as JPEG: pixel for pixel, up to compression noise.
    assert np.abs(page.image.astype(int) - np.asarray(scan).astype(int)).mean() < 4.0


def test_huge_pdf_page_is_rendered_at_a_lower_resolution_or_refused() -> None:
    big = PageSpec(strips=[Strip("I", np.zeros(100), 20.0, 50.0)], grid=False,
                   size_mm=(500.0, 500.0))
    data = make_pdf([big], fs=500.0)
    page = load_input(data, max_pixels=2_000_000).pages[0]
    assert page.image.shape[0] * page.image.shape[1] <= 2_000_000
    assert page.dpi < 200.0
    with pytest.raises(ImageTooLargeError, match="pixels"):
        load_input(data, name="poster.pdf", max_pixels=100_000)


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def _pdf(objects: list[bytes], trailer_extra: bytes = b"") -> bytes:
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R " % (len(objects) + 1) + trailer_extra
    out += b">>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _encrypted_pdf(user_password: bytes = b"secret") -> bytes:
    """A one-page PDF protected with the standard security handler (RC4 40-bit, R2)."""
    pad = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
    doc_id = b"0123456789abcdef"
    owner_key = md5((b"owner" + pad)[:32]).digest()[:5]
    o_value = _rc4(owner_key, (user_password + pad)[:32])
    permissions = -4
    key = md5((user_password + pad)[:32] + o_value + struct.pack("<i", permissions)
              + doc_id).digest()[:5]
    u_value = _rc4(key, pad)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <" + o_value.hex().encode() + b"> /U <"
        + u_value.hex().encode() + b"> /P %d >>" % permissions,
    ]
    return _pdf(objects, b"/Encrypt 4 0 R /ID [<" + doc_id.hex().encode() + b"> <"
                + doc_id.hex().encode() + b">] ")


def test_encrypted_pdf_is_refused_with_a_clear_message() -> None:
    with pytest.raises(UnsupportedInputError, match=r"locked\.pdf: .*encrypted"):
        load_input(_encrypted_pdf(), name="locked.pdf")


def test_pdf_without_pages_is_refused() -> None:
    empty = _pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])
    with pytest.raises(InputError, match=r"empty\.pdf: .*no pages"):
        load_input(empty, name="empty.pdf")


# ----------------------------------------------------------------------------- DICOM


def _dicom(
    pixels: np.ndarray | None,
    *,
    sop_class: str = SECONDARY_CAPTURE,
    photometric: str = "RGB",
    syntax: str = ExplicitVRLittleEndian,
    frames: int = 1,
    compressed: bytes | None = None,
) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "TEST^INPUT"
    ds.PatientID = "ID-42"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = "7"
    ds.AccessionNumber = "ACC1"
    ds.StudyDate, ds.StudyTime = "20240102", "101500"
    ds.ReferringPhysicianName = "DOC^TOR"
    ds.Modality = "OT"
    ds.Manufacturer = "ecgbridge tests"
    if pixels is not None:
        shape = pixels.shape[1:] if frames > 1 else pixels.shape
        ds.Rows, ds.Columns = shape[0], shape[1]
        ds.SamplesPerPixel = 3 if len(shape) == 3 else 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = pixels.dtype.itemsize * 8
        ds.BitsStored = ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        if ds.SamplesPerPixel == 3:
            ds.PlanarConfiguration = 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = compressed if compressed is not None else pixels.tobytes()
        if compressed is not None:
            ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    if pydicom.uid.UID(syntax).is_transfer_syntax:
        ds.save_as(buffer, enforce_file_format=True)
    else:  # an unknown (private) transfer syntax: say how to encode the data set
        ds.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def test_secondary_capture_rgb_with_identity() -> None:
    picture = _gradient()
    data = _dicom(picture)
    loaded = load_input(data, name="sc.dcm")
    assert loaded.source.media_type == "application/dicom"
    assert np.array_equal(loaded.pages[0].image, picture)
    identity = loaded.source.dicom
    assert identity["PatientName"] == "TEST^INPUT"
    assert identity["PatientID"] == "ID-42"
    assert identity["SOPClassUID"] == SECONDARY_CAPTURE
    assert identity["StudyDate"] == "20240102"
    assert identity["ReferringPhysicianName"] == "DOC^TOR"
    assert all(type(v) is str for v in identity.values())


def test_dicom_without_preamble_is_recognised() -> None:
    data = _dicom(_gradient())
    assert data[128:132] == b"DICM"
    assert load_input(data[132:]).source.media_type == "application/dicom"


def test_monochrome1_is_inverted_and_monochrome2_is_not() -> None:
    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (4, 1))
    mono2 = load_input(_dicom(grey, photometric="MONOCHROME2")).pages[0].image
    mono1 = load_input(_dicom(grey, photometric="MONOCHROME1")).pages[0].image
    assert np.array_equal(mono2[:, :, 1], grey)
    assert np.array_equal(mono1[:, :, 1], 255 - grey)


def test_multi_frame_secondary_capture_frames_are_pages() -> None:
    frames = np.stack([np.full((8, 9), v, np.uint8) for v in (10, 120, 240)])
    data = _dicom(frames, sop_class=MULTIFRAME_GRAYSCALE_BYTE_SC, photometric="MONOCHROME2",
                  frames=3)
    loaded = load_input(data)
    assert loaded.source.pages == 3
    assert [int(p.image[0, 0, 0]) for p in loaded.pages] == [10, 120, 240]
    assert [p.index for p in loaded.pages] == [0, 1, 2]


def test_jpeg_baseline_compressed_vl_photograph_is_decoded() -> None:
    picture = _gradient(64, 96)
    jpeg = _encode(Image.fromarray(picture), "JPEG", quality=95)
    data = _dicom(picture, sop_class=VL_PHOTOGRAPHIC_IMAGE, photometric="YBR_FULL_422",
                  syntax=JPEGBaseline8Bit, compressed=encapsulate([jpeg]))
    image = load_input(data).pages[0].image
    assert image.shape == picture.shape
    assert np.abs(image.astype(int) - picture.astype(int)).mean() < 3.0


def test_rle_lossless_is_decoded_exactly() -> None:
    picture = _gradient(40, 50)
    ds = pydicom.dcmread(io.BytesIO(_dicom(picture)))
    ds.compress(RLELossless, picture)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert np.array_equal(load_input(buffer.getvalue()).pages[0].image, picture)


def test_jpeg_2000_lossless_grey_is_decoded_exactly() -> None:
    grey = (np.add.outer(np.arange(40), np.arange(50)) * 2).astype(np.uint8)
    j2k = _encode(Image.fromarray(grey, "L"), "JPEG2000", irreversible=False, no_jp2=True)
    data = _dicom(grey, photometric="MONOCHROME2", syntax=JPEG2000Lossless,
                  compressed=encapsulate([j2k]))
    assert np.array_equal(load_input(data).pages[0].image[:, :, 0], grey)


def test_jpeg_lossless_from_dcmtk_is_decoded_exactly(tmp_path: Path) -> None:
    import shutil
    import subprocess

    pytest.importorskip("libjpeg", reason="pylibjpeg-libjpeg decodes JPEG Lossless")
    dcmcjpeg = shutil.which("dcmcjpeg")
    if dcmcjpeg is None:
        pytest.skip("dcmtk's dcmcjpeg is not installed")
    grey = (np.add.outer(np.arange(40), np.arange(50)) * 2).astype(np.uint8)
    plain, packed = tmp_path / "plain.dcm", tmp_path / "lossless.dcm"
    plain.write_bytes(_dicom(grey, photometric="MONOCHROME2"))
    subprocess.run([dcmcjpeg, "+e1", str(plain), str(packed)], check=True, timeout=60,
                   capture_output=True)
    ds = pydicom.dcmread(packed)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    assert np.array_equal(load_input(packed).pages[0].image[:, :, 0], grey)


def test_encapsulated_pdf_goes_through_the_pdf_reader() -> None:
    pdf = SCHILLER.read_bytes()
    ds_bytes = _dicom(None, sop_class=ENCAPSULATED_PDF)
    ds = pydicom.dcmread(io.BytesIO(ds_bytes))
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    loaded = load_input(buffer.getvalue(), name="ecg-pdf.dcm")
    assert loaded.source.media_type == "application/dicom"
    assert loaded.source.pages == 2
    assert loaded.source.dicom["SOPClassUID"] == ENCAPSULATED_PDF
    assert len(loaded.pages[0].paths) > 100
    assert any(t.text == "aVR" for t in loaded.pages[0].texts)


def test_unsupported_sop_class_is_named() -> None:
    data = _dicom(_gradient(), sop_class=TWELVE_LEAD_ECG_SOP_CLASS)
    with pytest.raises(UnsupportedInputError, match=TWELVE_LEAD_ECG_SOP_CLASS.replace(".", r"\.")):
        load_input(data, name="wave.dcm")


@pytest.mark.parametrize("syntax", [MPEG2_MAIN_PROFILE, "1.2.3.4.5.6"])
def test_undecodable_transfer_syntax_is_named(syntax: str) -> None:
    picture = _gradient()
    data = _dicom(picture, syntax=syntax, compressed=encapsulate([b"\xff\xd8\xff\xd9"]))
    with pytest.raises(UnsupportedInputError, match=syntax.replace(".", r"\.")):
        load_input(data, name="odd.dcm")


def test_dicom_without_pixel_data_is_refused() -> None:
    with pytest.raises(UnsupportedInputError, match=r"nopix\.dcm: .*no pixel data"):
        load_input(_dicom(None), name="nopix.dcm")


# ------------------------------------------------------------------------- bad input


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size but carries no image data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png"):
        load_input(_png_header_only(20000, 20000), name="bomb.png")
    # Below Pillow's own limit but above ours: refused from the header alone.
    with pytest.raises(ImageTooLargeError, match=r"3000 x 2000 = 6000000 pixels"):
        load_input(_png_header_only(3000, 2000), name="big.png", max_pixels=1_000_000)


def test_our_pixel_limit_replaces_pillows_warning_threshold(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # warns above 1000, fails above 2000
    data = _encode(Image.fromarray(_gradient(40, 40)), "PNG")  # 1600 pixels
    assert load_input(data, max_pixels=5000).pages[0].image.shape == (40, 40, 3)
    with pytest.raises(ImageTooLargeError, match="1600 pixels"):
        load_input(data, name="small-limit.png", max_pixels=1500)


def test_dicom_frame_size_is_checked_before_decoding() -> None:
    data = _dicom(_gradient(8, 8))
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows, ds.Columns = 20000, 20000
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ImageTooLargeError, match="20000 x 20000"):
        load_input(buffer.getvalue(), name="bomb.dcm")


def _valid_files() -> dict[str, bytes]:
    picture = Image.fromarray(_gradient())
    return {
        "png": _encode(picture, "PNG"),
        "jpeg": _encode(picture, "JPEG"),
        "pdf": SCHILLER.read_bytes(),
        "dicom": _dicom(_gradient(200, 300)),
    }


@pytest.mark.parametrize("kind", ["png", "jpeg", "pdf", "dicom"])
def test_truncated_files_raise_input_error(kind: str) -> None:
    data = _valid_files()[kind]
    for cut in (len(data) // 2, len(data) - 40):
        with pytest.raises(InputError, match=rf"cut\.{kind}: "):
            load_input(data[:cut], name=f"cut.{kind}")


def test_dicom_element_no_reader_can_decode_is_a_clear_input_error() -> None:
    """pydicom decodes an element when it is first used: an unknown VR (a flipped
    byte, as the fuzz test once sent) must be refused when the file is read, in one
    line, not fail later as a program defect."""
    data = _dicom(_gradient())
    at = data.find(b"\x08\x00\x18\x00UI")  # SOPInstanceUID, explicit VR
    assert at > 0
    broken = data[:at + 4] + b"U\\" + data[at + 6:]
    with pytest.raises(InputError, match=r"^bad\.dcm: the DICOM file is truncated or "
                                         r"corrupt \(.*Unknown Value Representation[^\n]*\)$"):
        load_input(broken, name="bad.dcm")


def test_empty_random_and_unknown_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"<bytes>: the input is empty"):
        load_input(b"")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.png: the input is empty"):
        load_input(empty)
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    with pytest.raises(UnsupportedInputError, match=r"noise\.bin: unknown file format"):
        load_input(noise, name="noise.bin")
    with pytest.raises(UnsupportedInputError, match="unknown file format"):
        load_input(b"Lead I, Lead II\n0.1, 0.2\n", name="table.csv")
    with pytest.raises(InputError, match=r"missing\.png: no such file"):
        load_input(tmp_path / "missing.png")
    with pytest.raises(InputError, match="is a directory"):
        load_input(tmp_path)
    # Right magic number, garbage after it.
    with pytest.raises(InputError, match=r"fake\.png: "):
        load_input(b"\x89PNG\r\n\x1a\n" + noise, name="fake.png")
    with pytest.raises(InputError, match=r"fake\.pdf: "):
        load_input(b"%PDF-1.7\n" + noise, name="fake.pdf")
