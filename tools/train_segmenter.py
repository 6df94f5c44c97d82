"""Train the trace/text segmenter shipped as ``ecgbridge/data/models/segmenter.onnx``.

Needs PyTorch and onnx (``pip install torch onnx``; not run-time dependencies). Seeded,
resumable and bounded: each call trains at most ``--minutes`` (or ``--steps``) from
the last checkpoint in ``--work``, so training proceeds in chunks that fit a session.

    python tools/train_segmenter.py train --data ../shared/data/train --work scratch/seg \
        --minutes 30 --synth 80
    python tools/train_segmenter.py export --work scratch/seg \
        --out ecgbridge/data/models/segmenter.onnx
    python tools/train_segmenter.py evaluate --data ../shared/data/train --work scratch/seg

``--data`` may also be a pack (``tools/segmenter_pack.py``) to train on a machine with a
GPU (``--device cuda --workers 14``).

Pages whose name hashes into the held-out tenth (see :func:`is_held_out`) are never
trained on; ``evaluate`` reports the trace IoU on them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The source tree's ecgbridge: its renderer (ecgbridge.testing) is not in the wheel.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from segmenter_data import IGNORE, TEXT, TRACE, TrainingPage, load_set  # noqa: E402

CROP = 192
SEED = 20261204


def is_held_out(name: str) -> bool:
    """One page in ten (by a hash of its name) is kept out of training."""
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10 == 0


class SeparableConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 convolution, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depth = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.point = nn.Conv2d(cin, cout, 1, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.point(self.depth(x))))


class Stage(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(SeparableConv(cin, cout), SeparableConv(cout, cout))


class SegmenterNet(nn.Module):
    """U-Net of separable convolutions: 3 poolings, widths 16-24-32-48, 2 output logits."""

    def __init__(self, widths: tuple[int, ...] = (16, 24, 32, 48), classes: int = 2) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(w0), nn.ReLU())
        self.enc0 = SeparableConv(w0, w0)
        self.enc1 = Stage(w0, w1)
        self.enc2 = Stage(w1, w2)
        self.enc3 = Stage(w2, w3)
        self.dec2 = Stage(w3 + w2, w2)
        self.dec1 = Stage(w2 + w1, w1)
        self.dec0 = Stage(w1 + w0, w0)
        self.head = nn.Conv2d(w0, classes, 1)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(self.stem(x))
        e1 = self.enc1(self.pool(e0))
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up(e3), e2], 1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], 1))
        d0 = self.dec0(torch.cat([self.up(d1), e0], 1))
        return self.head(d0)


def _augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour, contrast, noise, blur and JPEG changes a scan or photo may bring."""
    out = img.astype(np.float32)
    if rng.random() < 0.3:
        out = np.repeat(out.mean(axis=2, keepdims=True), 3, axis=2)
    elif rng.random() < 0.5:
        out = out[:, :, rng.permutation(3)]
    out = out * rng.uniform(0.6, 1.25) + rng.uniform(-40, 40)
    if rng.random() < 0.4:
        h, w = out.shape[:2]
        ramp = np.linspace(rng.uniform(-60, 0), rng.uniform(-60, 0), w, dtype=np.float32)
        out = out + (ramp[None, :, None] if rng.random() < 0.5 else
                     np.linspace(ramp[0], ramp[-1], h, dtype=np.float32)[:, None, None])
    if rng.random() < 0.5:
        out = out + rng.normal(0, rng.uniform(2, 12), out.shape).astype(np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.3, 1.0))
    if rng.random() < 0.4:
        ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 90))])
        if ok:
            out = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED).reshape(out.shape)
    return out


def _crop(page: TrainingPage, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random crop at a random scale (0.75-1.35x), flipped at random, with its labels."""
    f = float(np.exp(rng.uniform(np.log(0.75), np.log(1.35))))
    side = int(round(CROP / f))
    h, w = page.labels.shape
    side = min(side, h, w)
    traced = np.argwhere(page.labels & TRACE)
    if traced.size and rng.random() < 0.8:
        cy, cx = traced[rng.integers(len(traced))]
        y0 = int(np.clip(cy - rng.integers(side), 0, h - side))
        x0 = int(np.clip(cx - rng.integers(side), 0, w - side))
    else:
        y0, x0 = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    img = page.image[y0:y0 + side, x0:x0 + side]
    lab = page.labels[y0:y0 + side, x0:x0 + side]
    img = cv2.resize(img, (CROP, CROP), interpolation=cv2.INTER_AREA if f < 1 else
                     cv2.INTER_LINEAR)
    planes = [cv2.resize(((lab & bit) > 0).astype(np.float32), (CROP, CROP),
                         interpolation=cv2.INTER_LINEAR) for bit in (TRACE, TEXT, IGNORE)]
    target = np.stack([planes[0] >= 0.35, planes[1] >= 0.35], 0).astype(np.float32)
    weight = ((planes[2] < 0.5) & ~((planes[0] > 0.05) & (planes[0] < 0.35))).astype(np.float32)
    if rng.random() < 0.5:
        img, target, weight = img[:, ::-1], target[:, :, ::-1], weight[:, ::-1]
    return _augment(np.ascontiguousarray(img), rng), np.concatenate([target, weight[None]])


def _batch(pages: list[TrainingPage], n: int, rng: np.random.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(_crop(pages[int(rng.integers(len(pages)))], rng) for _ in range(n)),
                 strict=True)
    x = torch.from_numpy(np.stack(xs).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return x.contiguous(), torch.from_numpy(np.stack(ys))


class _Crops(torch.utils.data.IterableDataset):
    """Endless batches of augmented crops; each loader worker has its own seeded stream."""

    def __init__(self, pages: list[TrainingPage], batch: int, seed: tuple[int, ...]) -> None:
        self.pages, self.batch, self.seed = pages, batch, seed

    def __iter__(self):  # type: ignore[no-untyped-def]
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([*self.seed, info.id if info else 0])
        while True:
            yield _batch(self.pages, self.batch, rng)


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Weighted BCE (trace pixels up-weighted) plus a soft Dice term on the trace."""
    target, weight = y[:, :2], y[:, 2:3]
    pos = torch.tensor([6.0, 3.0], device=logits.device).view(1, 2, 1, 1)
    bce = nn.functional.binary_cross_entropy_with_logits(
        logits, target, weight=weight.expand_as(target), pos_weight=pos, reduction="sum")
    bce = bce / weight.sum().clamp(min=1.0)
    p = torch.sigmoid(logits[:, 0:1]) * weight
    t = target[:, 0:1] * weight
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    return bce + dice


def _pages(data: Path, held_out: bool, limit: int | None = None) -> list[TrainingPage]:
    if data.suffix == ".npz":  # a pack (tools/segmenter_pack.py): pages and held-out flags
        from segmenter_pack import read_pack

        packed, flags = read_pack(data)
        pages = [p for p, f in zip(packed, flags, strict=True) if bool(f) == held_out]
        print(f"{len(pages)} {'held-out' if held_out else 'training'} pages", flush=True)
        return pages
    pages = [p for p in load_set(data, limit) if is_held_out(p.name) == held_out]
    print(f"{len(pages)} {'held-out' if held_out else 'training'} pages", flush=True)
    return pages


def train(args: argparse.Namespace) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = SegmenterNet().to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step = 0
    ckpt = work / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=device)
        model.load_state_dict(state["model"])
        if not args.new_schedule:
            opt.load_state_dict(state["opt"])
        step = int(state["step"])
        print(f"resumed at step {step}", flush=True)
    pages = _pages(Path(args.data), held_out=False)
    if args.synth:
        pages += _synth_pages(work, Path(args.records), args.synth)
    loader = iter(torch.utils.data.DataLoader(
        _Crops(pages, args.batch, (SEED, step)), batch_size=None, num_workers=args.workers,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0))
    model.train()
    start = time.monotonic()
    first = step
    log = (work / "log.jsonl").open("a")
    losses: list[float] = []
    last = step + args.steps
    while step < last and time.monotonic() - start < 60 * args.minutes:
        if args.new_schedule:  # one cosine over this chunk's time
            done = (time.monotonic() - start) / (60 * args.minutes)
        else:
            done = min(step, args.total) / args.total
        lr = args.lr * 0.5 * (1 + np.cos(np.pi * min(done, 1.0)))
        for group in opt.param_groups:
            group["lr"] = max(lr, args.lr * 0.02)
        x, y = next(loader)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = _loss(model(x.to(memory_format=torch.channels_last)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            rec = {"step": step, "loss": float(np.mean(losses)), "lr": lr,
                   "s": round(time.monotonic() - start, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(rec, flush=True)
            losses = []
        if step % 200 == 0:
            _save(model, opt, step, ckpt)
    _save(model, opt, step, ckpt)
    print(f"steps {first}-{step} in {time.monotonic() - start:.0f} s", flush=True)


def _synth_pages(work: Path, records: Path, count: int) -> list[TrainingPage]:
    """`count` rendered pages (seeded, the same every chunk; cached in `work`)."""
    cache = work / f"synth_{SEED}_{count}.npz"
    if cache.exists():
        data = np.load(cache)
        return [TrainingPage(f"synth_{k}", data[f"i{k}"], data[f"l{k}"]) for k in range(count)]
    from segmenter_synth import render_training_pages  # needs wfdb: only when rendering

    pages = render_training_pages(records, count, SEED)
    np.savez(cache, **{f"i{k}": p.image for k, p in enumerate(pages)},
             **{f"l{k}": p.labels for k, p in enumerate(pages)})
    print(f"{count} rendered pages", flush=True)
    return pages


def _save(model: nn.Module, opt: torch.optim.Optimizer, step: int, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    cpu = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": cpu, "opt": opt.state_dict(), "step": step}, tmp)
    tmp.replace(path)


def _load(work: Path) -> tuple[SegmenterNet, int]:
    state = torch.load(work / "checkpoint.pt", weights_only=False, map_location="cpu")
    model = SegmenterNet()
    model.load_state_dict(state["model"])
    return model.eval(), int(state["step"])


def export(args: argparse.Namespace) -> None:
    model, step = _load(Path(args.work))
    dummy = torch.zeros(1, 3, 256, 256)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (dummy,), str(out), input_names=["page"], output_names=["logits"],
                      opset_version=13, dynamic_axes={"page": {2: "h", 3: "w"},
                                                      "logits": {2: "h", 3: "w"}},
                      dynamo=False)
    print(f"exported step {step} to {out} ({out.stat().st_size / 1e6:.2f} MB)")


def evaluate(args: argparse.Namespace) -> None:
    """Trace and text IoU (prob > 0.5, ignore pixels left out) on held-out pages."""
    model, step = _load(Path(args.work))
    torch.set_num_threads(args.threads)
    inter = np.zeros(2)
    union = np.zeros(2)
    for page in _pages(Path(args.data), held_out=True):
        h, w = page.labels.shape
        x = torch.from_numpy(page.image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        ph, pw = -h % 8, -w % 8
        x = nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
        with torch.no_grad():
            prob = torch.sigmoid(model(x))[0, :, :h, :w].numpy()
        keep = (page.labels & IGNORE) == 0
        for k, bit in enumerate((TRACE, TEXT)):
            pred, truth = (prob[k] > 0.5) & keep, ((page.labels & bit) > 0) & keep
            inter[k] += (pred & truth).sum()
            union[k] += (pred | truth).sum()
    iou = inter / np.maximum(union, 1)
    print(json.dumps({"step": step, "trace_iou": round(float(iou[0]), 4),
                      "text_iou": round(float(iou[1]), 4)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--work", required=True)
    t.add_argument("--minutes", type=float, default=30.0)
    t.add_argument("--steps", type=int, default=10**9)
    t.add_argument("--total", type=int, default=6000, help="steps of the cosine schedule")
    t.add_argument("--batch", type=int, default=12)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--device", default="cpu", help="cpu, or cuda on a machine with a GPU")
    t.add_argument("--workers", type=int, default=0, help="crop-making loader processes")
    t.add_argument("--new-schedule", action="store_true",
                   help="keep the weights, restart the optimizer with one cosine over --minutes")
    t.add_argument("--synth", type=int, default=0, help="rendered pages added to training")
    t.add_argument("--records", default="../shared/data/records",
                   help="records the rendered pages are drawn from")
    e = sub.add_parser("export")
    e.add_argument("--work", required=True)
    e.add_argument("--out", required=True)
    v = sub.add_parser("evaluate")
    v.add_argument("--data", required=True)
    v.add_argument("--work", required=True)
    v.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    {"train": train, "export": export, "evaluate": evaluate}[args.cmd](args)


if __name__ == "__main__":
    main()
