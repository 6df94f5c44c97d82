"""Fit the per-lead quality model (ecgbridge/digitizer/quality.py) on training pages.

Usage::

    python tools/fit_quality.py --pages DIR [--pages DIR ...] --set SET_DIR \
        [--scorer ../shared/eval/score.py] [--recall 0.9] [--cache evidence.npz]

Each ``--pages`` folder holds the pages' images (any subset of SET_DIR's manifest).
The pages are digitized here (default options), the evidence of every lead is
captured, and each lead is labelled by the independent scorer's aligned SNR against
the truth record (bad: under 5 dB). A logistic regression is fitted on the
standardised evidence (evidence that could not be measured counts as the average).
Its bias is then set so that quality < 0.5 (with the fixed factor of leads whose name
is a guess) catches the ``--recall`` share of the bad leads *of pages the model did
not see*: the pages are split in five folds, each fold judged by a model fitted on the
other four, and the shift of the bias that reaches the recall on those out-of-fold
judgements is added to the model fitted on all pages. The constants to paste into
quality.py are printed, with the recall and the share of good leads flagged, out of
fold and on the fitted pages.

Fit on training pages only (``../shared/data/train`` or your own renders), never on
the evaluation sets.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecgbridge.digitizer import merge, pipeline  # noqa: E402
from ecgbridge.digitizer import quality as quality_model  # noqa: E402
from ecgbridge.digitizer.options import DigitizeOptions  # noqa: E402
from ecgbridge.ecg import LEADS  # noqa: E402
from ecgbridge.errors import EcgBridgeError  # noqa: E402
from ecgbridge.inputs.load import load_input  # noqa: E402

BAD_SNR_DB = 5.0


def _scorer(path: Path):
    spec = importlib.util.spec_from_file_location("score", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def page_rows(image: Path, entry: dict, score, record_dirs: list[str]):
    """(evidence rows, aligned SNR per lead) of one page; empty when it is refused."""
    captured = []
    judge = quality_model.lead_evidence

    def capture(*args, **kwargs):
        captured.append(judge(*args, **kwargs))
        return captured[-1]

    merge.quality_model.lead_evidence = capture
    try:
        loaded = load_input(image)
        ecg = pipeline.digitize_pages(loaded.pages, DigitizeOptions(), source=loaded.source)
    except EcgBridgeError:
        return [], []
    finally:
        merge.quality_model.lead_evidence = judge
    truth, fs = score.read_truth(entry["record"], record_dirs)
    n = truth.shape[0]
    times = np.arange(ecg.signals.shape[1]) / ecg.fs
    pred = score.to_truth_grid(times, ecg.signals.T, n, fs)
    idxs = [score.window_index(entry["windows"].get(lead), n) for lead in score.LEADS]
    _mean, per_lead, _k = score.aligned_image_snr(truth, pred, idxs, int(0.2 * fs), 60.0)
    evidence = captured[-1]
    rows, snrs = [], []
    for i, lead in enumerate(LEADS):
        snr = per_lead[score.LEADS.index(lead)]
        if np.isfinite(ecg.signals[i]).any() and np.isfinite(snr):
            rows.append(evidence[i])
            snrs.append(snr)
    return rows, snrs


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50) -> np.ndarray:
    """Newton-fitted logistic regression (last weight is the bias); y = 1 for good."""
    xb = np.hstack([x, np.ones((x.shape[0], 1))])
    w = np.zeros(xb.shape[1])
    reg = l2 * np.eye(w.size)
    reg[-1, -1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) + reg @ w
        hess = xb.T @ (xb * (p * (1 - p))[:, None]) + reg
        w -= np.linalg.solve(hess, grad)
    return w


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", action="append", required=True, type=Path)
    ap.add_argument("--set", required=True, type=Path, help="set with manifest.json")
    ap.add_argument("--scorer", type=Path, default=Path("../shared/eval/score.py"))
    ap.add_argument("--records", action="append", default=None)
    ap.add_argument("--recall", type=float, default=0.9)
    ap.add_argument("--cache", type=Path, help="evidence and SNRs saved here (.npz) and "
                    "reused when it exists: refit without digitizing again")
    args = ap.parse_args(argv)
    if args.cache and args.cache.exists():
        saved = np.load(args.cache)
        return _fit(saved["x"], saved["snr"], saved["page"], args.recall)
    score = _scorer(args.scorer)
    record_dirs = args.records or [str(args.set / "records"),
                                   str(args.scorer.resolve().parents[1] / "data" / "records")]
    manifest = {e["image"]: e for e in json.loads((args.set / "manifest.json").read_text())}
    rows, snrs, pages = [], [], []
    for folder in args.pages:
        for image in sorted(folder.iterdir()):
            if image.name in manifest:
                r, s = page_rows(image, manifest[image.name], score, record_dirs)
                rows += r
                snrs += s
                pages += [image.name] * len(r)
                print(f"{image.name}: {len(r)} leads", file=sys.stderr)
    x, snr, page = np.asarray(rows), np.asarray(snrs), np.asarray(pages)
    if args.cache:
        np.savez(args.cache, x=x, snr=snr, page=page)
    return _fit(x, snr, page, args.recall)


def _fit(x: np.ndarray, snr: np.ndarray, page: np.ndarray, recall: float) -> int:
    """Fit, print the constants and the figures reached out of fold and on the fit."""
    good = (snr >= BAD_SNR_DB).astype(float)
    mean = np.nanmean(x, axis=0)
    std = np.maximum(np.nanstd(x, axis=0), 1e-3)
    z = np.nan_to_num((x - mean) / std, nan=0.0)
    factor = np.where(x[:, quality_model.FEATURES.index("prior")]
                      <= quality_model.GUESSED_NAME_PRIOR,
                      quality_model.INFERRED_LAYOUT_FACTOR, 1.0)
    # Out-of-fold logits: each page judged by a model fitted without it.
    names = np.unique(page)
    fold_of = dict(zip(names, np.random.default_rng(0).permutation(names.size) % _FOLDS,
                       strict=True))
    fold = np.array([fold_of[p] for p in page])
    oof = np.zeros(len(snr))
    for k in range(_FOLDS):
        w_k = fit_logistic(z[fold != k], good[fold != k])
        oof[fold == k] = z[fold == k] @ w_k[:-1] + w_k[-1]
    shift = _bias_for_recall(oof, factor, good, recall)
    w = fit_logistic(z, good)
    bias = float(w[-1] + shift)
    for name, logit in (("out of fold", oof + shift), ("fitted pages", z @ w[:-1] + bias)):
        flagged = factor / (1.0 + np.exp(-logit)) < 0.5
        print(f"{name}: leads {len(snr)}, bad {int((good == 0).sum())}: recall "
              f"{flagged[good == 0].mean():.3f}, good flagged {flagged[good == 1].mean():.3f}")
    print(_constant("WEIGHTS", w[:-1]))
    print(_constant("FEATURE_MEAN", mean))
    print(_constant("FEATURE_STD", std))
    print(f"BIAS = {bias:.4f}")
    return 0


def _constant(name: str, values: np.ndarray) -> str:
    """A tuple constant as Python source, seven values to a line."""
    lines = [", ".join(f"{v:.4f}" for v in values[i:i + 7]) for i in range(0, len(values), 7)]
    return f"{name} = (\n    " + ",\n    ".join(lines) + ",\n)"


#: Folds of pages for the out-of-fold judgements.
_FOLDS = 5


def _bias_for_recall(logit: np.ndarray, factor: np.ndarray, good: np.ndarray,
                     recall: float) -> float:
    """The largest bias shift (fewest leads flagged) at which the recall is reached."""
    shift = 0.0
    for b in np.linspace(6.0, -6.0, 1201):
        shift = float(b)
        flagged = factor / (1.0 + np.exp(-(logit + b))) < 0.5
        if flagged[good == 0].mean() >= recall:
            break
    return shift


if __name__ == "__main__":
    raise SystemExit(main())
