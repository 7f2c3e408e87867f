"""P3: k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3) at Market-1501 size (3,368 query + 15,913
gallery, 751 ids, 2048-d clustered features): reidlib's re_ranking beside the dense algorithm
(reid-strong-baseline's utils/re_ranking.py, restated in tests/helpers/dense_rerank.py); then reidlib's alone
at MSMT17 size (11,659 + 82,161, 3,060 ids), where the dense one would need about 180 GB.

Each run is a child process, so the peak resident memory it reports (VmHWM, reset just before the
call) is its own; it counts the interpreter, torch and the features too.

    .venv/bin/python benchmarks/reranking.py [--device cpu|cuda] [--sizes market,msmt17] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.dense_rerank import FLOAT16_TOLERANCE, dense_re_ranking

from reidlib.evaluation import evaluate_rank, re_ranking

# name: (queries, gallery items, identities, whether the dense algorithm runs there too)
SIZES = {"quick": (1000, 5000, 250, True), "market": (3368, 15913, 751, True), "msmt17": (11659, 82161, 3060, False)}
NOISE = 3.0  # per-dimension noise around unit-variance identity centres: rank-1 about 0.9 before re-ranking
IMPLEMENTATIONS = {"reidlib": re_ranking, "dense": dense_re_ranking}


def labels(size: str, seed: int = 0):
    """Identities and cameras (6) of the queries then the gallery."""
    num_query, num_gallery, ids, _ = SIZES[size]
    rng = np.random.default_rng(seed)
    return rng.integers(ids, size=num_query + num_gallery), rng.integers(6, size=num_query + num_gallery)


def features(size: str, pids: np.ndarray, seed: int = 0) -> torch.Tensor:
    """L2-normalised 2048-d features around one random centre per identity."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(SIZES[size][2], 2048, generator=generator)
    feats = centres[torch.from_numpy(pids)].add_(torch.randn(len(pids), 2048, generator=generator), alpha=NOISE)
    return torch.nn.functional.normalize(feats, dim=1, out=feats)


def peak_rss_gb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 2**20


def child(implementation: str, size: str, device: str, out: str | None) -> None:
    """One timed run; prints a JSON line: seconds, peak RSS, peak GPU memory, mAP and rank-1."""
    pids, camids = labels(size)
    feats = features(size, pids).to(device)
    num_query = SIZES[size][0]
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak resident memory starts again from here
    start = time.perf_counter()
    distmat = IMPLEMENTATIONS[implementation](feats[:num_query], feats[num_query:])
    seconds = time.perf_counter() - start
    peak = peak_rss_gb()
    gpu_peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    cmc, mAP, _ = evaluate_rank(distmat, pids[:num_query], pids[num_query:], camids[:num_query], camids[num_query:])
    if out:
        np.save(out, distmat)
    print(json.dumps({"seconds": seconds, "peak_gb": peak, "gpu_peak_gb": gpu_peak, "mAP": mAP,
                      "rank1": float(cmc[0])}))


def run_child(implementation: str, size: str, device: str, out: str | None = None) -> dict:
    command = [sys.executable, __file__, "--child", implementation, "--sizes", size, "--device", device]
    done = subprocess.run(command + (["--out", out] if out else []), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def plain_map(size: str) -> float:
    pids, camids = labels(size)
    feats, num_query = features(size, pids), SIZES[size][0]
    distmat = torch.cdist(feats[:num_query], feats[num_query:]).numpy()
    return evaluate_rank(distmat, pids[:num_query], pids[num_query:], camids[:num_query], camids[num_query:])[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both implementations run")
    parser.add_argument("--sizes", default="market,msmt17", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--quick", action="store_true", help="the small problem only (1,000 + 5,000)")
    parser.add_argument("--child", choices=tuple(IMPLEMENTATIONS), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = ["quick"] if args.quick else args.sizes.split(",")
    if args.child:
        return child(args.child, sizes[0], args.device, args.out)
    gpu = args.device == "cuda"
    print(f"| size (query + gallery, 2048-d) | implementation | seconds | peak RSS (GB) |"
          f"{' peak GPU memory (GB) |' if gpu else ''} mAP | time / reidlib's | memory / reidlib's |")
    print(f"|---|---|---|---|{'---|' if gpu else ''}---|---|---|")
    notes = []
    for size in sizes:
        num_query, num_gallery, _, with_dense = SIZES[size]
        label = f"{size} ({num_query:,} + {num_gallery:,})"
        with tempfile.TemporaryDirectory() as tmp:
            runs = {"reidlib": run_child("reidlib", size, args.device, f"{tmp}/reidlib.npy" if with_dense else None)}
            if with_dense:
                runs["dense"] = run_child("dense", size, args.device, f"{tmp}/dense.npy")
                gap = np.abs(np.load(f"{tmp}/reidlib.npy") - np.load(f"{tmp}/dense.npy"))
                notes.append(f"{size}: {(gap > FLOAT16_TOLERANCE).sum():,} of {gap.size:,} distances differ from the "
                             f"dense algorithm's by more than {FLOAT16_TOLERANCE} (largest {gap.max():.1e}); "
                             f"mAP before re-ranking {plain_map(size):.4f}")
        ours = runs["reidlib"]
        for name, run in runs.items():
            gpu_cell = f" {run['gpu_peak_gb']:.2f} |" if gpu else ""
            time_ratio = f"{run['seconds'] / ours['seconds']:.1f}x" if name != "reidlib" else "1.0"
            memory_ratio = f"{run['peak_gb'] / ours['peak_gb']:.1f}x" if name != "reidlib" else "1.0"
            print(f"| {label} | {name} | {run['seconds']:.1f} | {run['peak_gb']:.2f} |{gpu_cell} "
                  f"{run['mAP']:.4f} | {time_ratio} | {memory_ratio} |", flush=True)
    print()
    for note in notes:
        print(note)
    print(f"device: {args.device}; cpu: {os.cpu_count()} cores; torch {torch.__version__}")


if __name__ == "__main__":
    main()
