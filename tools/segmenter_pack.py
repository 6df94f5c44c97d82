"""Pack training pages into one compact file that travels to a training machine.

Training pages at the model's scale are large as arrays (a 1100 px page is 2.7 MB); a
machine with an accelerator is reached with a few tens of MB. A pack holds every page as
a JPEG (quality 92: the training crops are JPEG-augmented anyway) and its label bits as
a PNG, in one ``.npz``:

    python tools/segmenter_pack.py --data ../shared/data/train \
        --synth-cache scratch/seg/synth_20261204_80.npz --out scratch/pack.npz

The held-out tenth of the generator pages (``train_segmenter.is_held_out``) is packed too,
flagged, so the training machine can report the held-out IoU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segmenter_data import TrainingPage, load_set  # noqa: E402

WEBP_QUALITY = 75


def _encode(page: TrainingPage) -> tuple[np.ndarray, np.ndarray]:
    ok1, img = cv2.imencode(".webp", page.image[:, :, ::-1], [cv2.IMWRITE_WEBP_QUALITY,
                                                              WEBP_QUALITY])
    ok2, lab = cv2.imencode(".png", page.labels, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not (ok1 and ok2):
        raise ValueError(f"cannot encode {page.name}")
    return img, lab


def write_pack(pages: list[TrainingPage], held_out: list[bool], out: Path) -> None:
    """Write `pages` (and which are held out) to `out` as WebP/PNG bytes in an npz."""
    arrays: dict[str, np.ndarray] = {}
    for k, page in enumerate(pages):
        arrays[f"i{k}"], arrays[f"l{k}"] = _encode(page)
    arrays["names"] = np.array([p.name for p in pages])
    arrays["held_out"] = np.array(held_out, dtype=bool)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)


def read_pack(path: Path) -> tuple[list[TrainingPage], np.ndarray]:
    """The pages of a pack and the held-out flags."""
    data = np.load(path)
    names = data["names"]
    pages = []
    for k, name in enumerate(names):
        img = cv2.imdecode(data[f"i{k}"], cv2.IMREAD_COLOR)[:, :, ::-1]
        lab = cv2.imdecode(data[f"l{k}"], cv2.IMREAD_UNCHANGED)
        pages.append(TrainingPage(str(name), np.ascontiguousarray(img), lab))
    return pages, data["held_out"]


def main() -> None:
    from train_segmenter import is_held_out

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="generator set (manifest.json, meta/)")
    parser.add_argument("--synth-cache", help="rendered pages cached by train_segmenter")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    pages = load_set(Path(args.data))
    held = [is_held_out(p.name) for p in pages]
    if args.synth_cache:
        data = np.load(args.synth_cache)
        count = len([k for k in data.files if k.startswith("i")])
        pages += [TrainingPage(f"synth_{k}", data[f"i{k}"], data[f"l{k}"]) for k in range(count)]
        held += [False] * count
    write_pack(pages, held, Path(args.out))
    size = Path(args.out).stat().st_size / 1e6
    print(f"{len(pages)} pages ({sum(held)} held out) -> {args.out} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
