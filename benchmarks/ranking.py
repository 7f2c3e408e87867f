"""P2: the Market-1501 ranking protocol at Market-1501 size (3,368 queries x 15,913 gallery, 751 ids,
6 cameras): reidlib's ``evaluate_rank`` beside a per-query Python loop in the style of
reid-strong-baseline's ``eval_func`` (run on a sample of queries and scaled up to all of them).
Both give the same numbers (checked on the sample). ``--device cuda`` ranks a matrix held on the GPU.

    .venv/bin/python benchmarks/ranking.py [--sample 300] [--repeat 5] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.reference_rank import reference_eval  # noqa: E402

from reidlib.evaluation import evaluate_rank  # noqa: E402


def market_sized_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    num_q, num_g, ids, cams = 3368, 15913, 751, 6
    q_pids, g_pids = rng.integers(ids, size=num_q), rng.integers(ids, size=num_g)
    q_camids, g_camids = rng.integers(cams, size=num_q), rng.integers(cams, size=num_g)
    distmat = rng.random((num_q, num_g), dtype=np.float32)
    distmat -= 0.3 * (q_pids[:, None] == g_pids[None, :])  # true matches tend to be nearer
    return distmat, q_pids, g_pids, q_camids, g_camids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=300, help="queries the loop reference runs on")
    parser.add_argument("--repeat", type=int, default=5, help="runs of evaluate_rank (the median is shown)")
    parser.add_argument("--device", default="cpu", help="where the distance matrix is held and ranked")
    args = parser.parse_args()
    distmat, q_pids, g_pids, q_camids, g_camids = market_sized_problem()
    held = torch.from_numpy(distmat).to(args.device)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        cmc, mAP, mINP = evaluate_rank(held, q_pids, g_pids, q_camids, g_camids)  # returns on the host: synced
        times.append(time.perf_counter() - start)
    ours = float(np.median(times))
    n = args.sample
    start = time.perf_counter()
    ref_cmc, ref_mAP, _ = reference_eval(distmat[:n], q_pids[:n], g_pids, q_camids[:n], g_camids)
    loop = (time.perf_counter() - start) * len(q_pids) / n
    sample_cmc, sample_mAP, _ = evaluate_rank(held[:n], q_pids[:n], g_pids, q_camids[:n], g_camids)  # on the device
    assert abs(sample_mAP - ref_mAP) < 1e-6 and np.allclose(sample_cmc, ref_cmc, atol=1e-6)
    print("| 3,368 x 15,913 ranking (Market-1501 size) | seconds | ratio to reidlib |")
    print("|---|---|---|")
    print(f"| reidlib evaluate_rank (binned counts; median of {args.repeat}) | {ours:.2f} | 1.0 |")
    print(f"| per-query loop (eval_func style; {n} queries, scaled) | {loop:.1f} | {loop / ours:.1f}x |")
    where = torch.cuda.get_device_name(held.device) if held.is_cuda else f"cpu, {torch.get_num_threads()} threads"
    print(f"\nmAP {mAP:.4f}, rank-1 {cmc[0]:.4f}, mINP {mINP:.4f}; evaluate_rank on {where}; "
          f"host: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
