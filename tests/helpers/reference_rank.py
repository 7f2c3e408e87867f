"""The per-query ranking protocol that ``reidlib.evaluation.evaluate_rank`` must equal (tests, benchmarks/ranking.py)."""
import numpy as np


def reference_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """reid-strong-baseline's per-query eval_func, with a stable sort (ties: gallery order)."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    cmcs, aps, inps = [], [], []
    for i in range(num_q):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        matches = (g_pids[order] == q_pids[i]).astype(np.int32)[keep]
        if not matches.any():
            continue
        cmc = matches.cumsum()
        last = np.where(matches == 1)[0].max()
        inps.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        cmcs.append(cmc[:max_rank])
        precision = matches.cumsum() / (np.arange(len(matches)) + 1.0)
        aps.append((precision * matches).sum() / matches.sum())
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps))
