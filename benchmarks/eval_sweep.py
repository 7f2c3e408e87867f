"""Evaluation sweeps: what a trial of test-time options costs beside the training trial it evaluates.

Default mode, end to end on a small config: a training sweep of one trial (``--epochs`` on ``--config``,
1 in 8 training identities held out, as sweeps do by default), then an evaluation sweep of it (``from:``): a grid of ``--trials`` re-ranking k1
values, each trial a fresh papermill kernel as in any sweep. The first evaluation trial extracts and
caches the features; the others read them (no model, no image). The table gives each trial's
in-kernel seconds (summary ``wall_time_s``) and ledger seconds (kernel start to end), and the whole
sweeps' wall clock.

    .venv/bin/python benchmarks/eval_sweep.py [--config configs/synthetic.yml] [--epochs 5] [--trials 6]
        [--device cpu|cuda|auto]

``--market``: issue 20's speed targets at Market-1501 size (3,368 query + 15,913 gallery, 751 training
identities in 12,936 images, 94 of them held out as sweeps do), on the CPU, in one process:

- an evaluation sweep's trial on cached features, ``evaluate_checkpoint`` itself (listing the dataset,
  the validation split, reading the cached feature files, distances, ``evaluate_rank``) on ``val/*``
  only (``TEST.EVAL_TEST_SET`` 'no', as the sweep runs it), without and with re-ranking (k1=20, k2=6,
  lambda=0.3); then the same evaluation with ``test/*`` (as finalize runs the chosen setting once), its
  re-ranking beside ``benchmarks/reranking.py``'s figure measured in the same run (its child process,
  Market size). The dataset is empty
  files with Market-1501's names and the cache is filled, the way ``FeatureCache`` writes it, with
  ``reranking.py``'s clustered 2048-d features: the trial never opens an image (it would fail if it did).
- what a trial that re-extracts features costs instead: the ResNet-50 of ``--config`` (random weights,
  same cost) loaded from its checkpoint, then ``FeatureCache`` extracting ``--sample`` generated 128x64
  JPEGs at 256x128 (cache miss: the real loader and forward), scaled linearly to every image a sweep
  trial extracts (the validation split); plus the cached re-ranking trial's evaluation.
- 50 re-ranking trials each way: cached = one extraction (the first trial) + 50 cached trials;
  re-extracting = 50 re-extracting trials; the ratio (target >= 10x). A papermill kernel's start-up,
  the same for both, is left out (the default mode shows it).

    .venv/bin/python benchmarks/eval_sweep.py --market [--config configs/softmax_triplet.yml] [--sample 128]
        [--repeats 3]
    .venv/bin/python benchmarks/eval_sweep.py --quick   # --market on reranking.py's small problem, seconds
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES_PER_ID = 12936 / 751  # Market-1501's bounding_box_train
TRIALS = 50  # the comparison: 50 re-ranking trials each way


def run(spec: dict, directory: Path, runs: Path, name: str):
    from reidlib.sweep import run_sweep

    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    start = time.perf_counter()
    result = run_sweep(path, runs_dir=runs, project_dir=REPO, wandb="disabled", progress=False)
    return result, time.perf_counter() - start


def write_market_files(root: Path, size: str) -> None:
    """Empty files with Market-1501's names under ``root``: query and gallery labelled as
    ``reranking.py``'s problem of ``size``, training images spread over its identities and 6 cameras."""
    import numpy as np
    from reranking import SIZES, labels

    num_query, _, ids, _ = SIZES[size]
    pids, camids = labels(size)
    rng = np.random.default_rng(1)
    num_train = round(ids * TRAIN_IMAGES_PER_ID)
    splits = {"bounding_box_train": (rng.integers(ids, size=num_train), rng.integers(6, size=num_train)),
              "query": (pids[:num_query], camids[:num_query]), "bounding_box_test": (pids[num_query:], camids[num_query:])}
    for folder, (split_pids, split_camids) in splits.items():
        (root / folder).mkdir(parents=True)
        for n, (pid, camid) in enumerate(zip(split_pids, split_camids)):
            (root / folder / f"{pid:04d}_c{camid + 1}s1_{n:06d}_00.jpg").touch()


def fill_feature_cache(cfg, dataset, size: str) -> None:
    """The four entries an evaluation trial reads (validation and test query/gallery), written by
    ``FeatureCache`` as after an extraction: ``reranking.py``'s clustered features for their labels."""
    import numpy as np
    import torch
    from reranking import features

    from reidlib.engine.evaluate_trial import FeatureCache

    cache = FeatureCache(cfg)
    pairs = ((dataset.val_query, dataset.val_gallery), (dataset.query, dataset.gallery))
    for seed, (query, gallery) in enumerate(pairs):
        pids = np.array([pid for _, pid, _ in query + gallery], dtype=np.int64)
        camids = np.array([camid for _, _, camid in query + gallery], dtype=np.int64)
        feats = features(size, pids, seed)  # one draw for the pair: query and gallery share identity centres
        for samples, rows in ((query, slice(0, len(query))), (gallery, slice(len(query), None))):
            cache._write(cache.path(samples), {"feats": feats[rows].clone(), "pids": torch.from_numpy(pids[rows]),
                                               "camids": torch.from_numpy(camids[rows])})


def timed_trial(cfg, repeats: int) -> tuple[float, dict]:
    """Median seconds of ``evaluate_checkpoint(cfg)`` over ``repeats`` calls, and its test metrics (none
    when ``TEST.EVAL_TEST_SET`` is 'no')."""
    from reidlib.engine.evaluate_trial import evaluate_checkpoint
    from reidlib.trial import TrialStatus

    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = evaluate_checkpoint(cfg)
        seconds.append(time.perf_counter() - start)
        assert result.status == TrialStatus.FINISHED, result.error
    return statistics.median(seconds), result.test


def parts_seconds(cfg) -> tuple[float, float]:
    """Two parts of a cached trial, each timed alone: ``make_dataset`` (listing the files, holding out
    the validation split) and the test split's distances (``feature_distances`` on the cached features)."""
    from reidlib.data import make_dataset
    from reidlib.engine.evaluate_trial import FeatureCache
    from reidlib.evaluation import feature_distances

    start = time.perf_counter()
    dataset = make_dataset(cfg)
    listing_s = time.perf_counter() - start
    cache = FeatureCache(cfg)
    query, gallery = cache.features(dataset.query)[0], cache.features(dataset.gallery)[0]
    start = time.perf_counter()
    feature_distances(query, gallery, cfg.TEST.FEAT_NORM == "yes")
    return listing_s, time.perf_counter() - start


def extraction_seconds(cfg, folder: Path, num_images: int) -> tuple[float, float]:
    """``(model load s, extraction s per image)``: a fresh ``FeatureCache`` builds the model from the
    checkpoint, then extracts ``num_images`` generated 128x64 JPEGs (after 4 untimed, the first
    forward's one-off cost), as a trial whose features are not cached."""
    import numpy as np
    import PIL.Image

    from reidlib.engine.evaluate_trial import FeatureCache

    rng = np.random.default_rng(0)
    folder.mkdir()
    samples = []
    for n in range(num_images + 4):
        path = folder / f"{n % 751:04d}_c1s1_{n:06d}_00.jpg"
        PIL.Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(path)
        samples.append((str(path), n % 751, 0))
    cache = FeatureCache(cfg)
    start = time.perf_counter()
    cache.model()
    load_s = time.perf_counter() - start
    cache.features(samples[:4])
    start = time.perf_counter()
    cache.features(samples[4:])
    per_image = (time.perf_counter() - start) / num_images
    assert cache.extracted == 2
    return load_s, per_image


def market(args) -> None:
    import torch
    from reranking import SIZES, run_child

    from reidlib.config import load_config
    from reidlib.data import make_dataset
    from reidlib.devices import resolve_device
    from reidlib.modeling import make_model
    from reidlib.sweep.holdout import default_val_ids

    size = "quick" if args.quick else "market"
    device = resolve_device(args.device).type
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_market_files(tmp / "market1501", size)
        checkpoint = tmp / "trained" / "checkpoint.pth"
        keys = {"DATASETS.ROOT_DIR": str(tmp), "MODEL.DEVICE": device, "MODEL.PRETRAIN_CHOICE": "none",
                "TEST.WEIGHT": str(checkpoint), "OUTPUT_DIR": str(tmp / "trial"), "DATALOADER.NUM_WORKERS": 0,
                "TEST.RERANK_K1": 20, "TEST.RERANK_K2": 6, "TEST.RERANK_LAMBDA": 0.3}
        listed = make_dataset(load_config(REPO / args.config, {**keys, "TEST.WEIGHT": ""}))
        keys["DATASETS.VAL_IDS"] = default_val_ids(listed.holdout_capacity())  # what a sweep holds out
        cfg = load_config(REPO / args.config, keys)
        dataset = make_dataset(cfg)
        checkpoint.parent.mkdir()
        torch.save({"model": make_model(cfg, dataset.num_train_pids).state_dict()}, checkpoint)
        fill_feature_cache(cfg, dataset, size)

        trial_s = timed_trial(load_config(REPO / args.config, {**keys, "TEST.EVAL_TEST_SET": "no"}), args.repeats)[0]
        rerank_s = timed_trial(load_config(REPO / args.config, {**keys, "TEST.EVAL_TEST_SET": "no",
                                                                "TEST.RE_RANKING": "yes"}), args.repeats)[0]
        plain_s, plain = timed_trial(cfg, args.repeats)
        listing_s, distances_s = parts_seconds(cfg)
        tested_rerank_s, reranked = timed_trial(load_config(REPO / args.config, {**keys, "TEST.RE_RANKING": "yes"}),
                                                args.repeats)
        reference_s = run_child("reidlib", size, device)["seconds"]
        load_s, per_image = extraction_seconds(cfg, tmp / "sample", args.sample)

    images = len(dataset.val_query) + len(dataset.val_gallery)  # a sweep trial extracts the validation split only
    extract_s = load_s + per_image * images
    cached_sweep_s = extract_s + TRIALS * rerank_s
    extracting_sweep_s = TRIALS * (extract_s + rerank_s)
    ratio = extracting_sweep_s / cached_sweep_s
    num_query, num_gallery = SIZES[size][:2]
    val_ids = keys["DATASETS.VAL_IDS"]
    val = f"val {len(dataset.val_query):,} + {len(dataset.val_gallery):,} ({val_ids} ids)"
    test = f"test {num_query:,} + {num_gallery:,}"
    rows = [
        (f"evaluation sweep trial on cached features, no re-ranking ({val}; test/* left to finalize; median of "
         f"{args.repeats})", f"{trial_s:.2f}", "<= 2 s", trial_s <= 2),
        (f"- of which make_dataset: listing {sum(map(len, (listed.train, dataset.query, dataset.gallery))):,} files, "
         f"holding out the validation split", f"{listing_s:.2f}", "", None),
        ("evaluation sweep trial on cached features, re-ranking k1=20 k2=6 lambda=0.3 (val only)",
         f"{rerank_s:.2f}", "", None),
        (f"the chosen setting tested once (as finalize): no re-ranking, val and {test}", f"{plain_s:.2f}", "", None),
        (f"- of which the test distances (feature_distances, {test}, 2048-d)", f"{distances_s:.2f}", "", None),
        ("the chosen setting tested once (as finalize): re-ranking k1=20 k2=6 lambda=0.3, val and test",
         f"{tested_rerank_s:.2f}", f"<= 1.5 x reranking.py = {1.5 * reference_s:.2f}",
         tested_rerank_s <= 1.5 * reference_s),
        (f"benchmarks/reranking.py, {size} size: re_ranking alone ({test}), its child process",
         f"{reference_s:.2f}", "", None),
        (f"{cfg.MODEL.NAME} built from its checkpoint (FeatureCache.model)", f"{load_s:.2f}", "", None),
        (f"feature extraction at {cfg.INPUT.SIZE_TEST[0]}x{cfg.INPUT.SIZE_TEST[1]}, per image "
         f"(measured on {args.sample} images)", f"{per_image:.4f}", "", None),
        (f"features of a sweep trial's {images:,} validation images: model + per image x {images:,} (scaled linearly)",
         f"{extract_s:.1f}", "", None),
        ("re-extracting re-ranking trial (features + the cached sweep trial's evaluation)",
         f"{extract_s + rerank_s:.1f}", "", None),
        (f"{TRIALS} re-ranking trials on cached features (1 extraction + {TRIALS} cached trials)",
         f"{cached_sweep_s:.1f}", "", None),
        (f"{TRIALS} re-ranking trials that re-extract features", f"{extracting_sweep_s:.1f}", "", None),
        (f"{TRIALS} re-extracting / {TRIALS} cached", f"{ratio:.1f}x", ">= 10x", ratio >= 10),
    ]
    print("| measure | seconds | target | met? |\n|---|---|---|---|")
    for measure, seconds, target, met in rows:
        print(f"| {measure} | {seconds} | {target} | {'' if met is None else 'yes' if met else 'NO'} |")
    print(f"\ntest/mAP on the synthetic features: {plain['test/mAP']:.4f} plain, {reranked['test/mAP']:.4f} re-ranked. "
          f"Kernel start-up (papermill) is left out of every row. {args.config}, device {device}, "
          f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
          + (" -- --quick: reranking.py's small problem, not Market size; the targets do not apply" if args.quick else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="default: configs/synthetic.yml; with --market, configs/softmax_triplet.yml")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=6, help="evaluation trials (re-ranking k1 values)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--market", action="store_true", help="issue 20's speed targets at Market-1501 size")
    parser.add_argument("--quick", action="store_true", help="--market on a small problem: a smoke run in seconds")
    parser.add_argument("--sample", type=int, help="--market: images extracted to time extraction (default 128)")
    parser.add_argument("--repeats", type=int, help="--market: calls of each cached trial, median (default 3)")
    args = parser.parse_args()
    if args.market or args.quick:
        args.config = args.config or "configs/softmax_triplet.yml"
        args.sample = args.sample or (4 if args.quick else 128)
        args.repeats = args.repeats or (1 if args.quick else 3)
        if args.device == "auto":
            args.device = "cpu"  # the targets are for the CPU; --device cuda measures the GPU
        sys.path.insert(0, str(REPO / "benchmarks"))  # reranking.py: its problem and its figure
        return market(args)
    args.config = args.config or "configs/synthetic.yml"

    with tempfile.TemporaryDirectory() as tmp:
        tmp, runs = Path(tmp), Path(tmp) / "runs"
        training, train_s = run({"name": "trained", "method": "grid", "config_file": args.config,
                                 "parameters": {"max_epochs": args.epochs},
                                 "defaults": {"device": args.device}}, tmp, runs, "train")
        k1 = [10 + 4 * i for i in range(args.trials)]
        evaluation, eval_s = run({"name": "rerank", "from": training.sweep_id, "method": "grid",
                                  "parameters": {"TEST.RE_RANKING": "yes", "TEST.RERANK_K1": k1},
                                  "defaults": {"device": args.device}}, tmp, runs, "rerank")
        rows = [("training trial", training.trials[0])] + \
               [(f"evaluation trial {i + 1}" + (" (extracts features)" if i == 0 else " (cached features)"), t)
                for i, t in enumerate(sorted(evaluation.trials, key=lambda t: t.seq))]
        print(f"{'trial':40s} {'state':9s} {'in kernel s':>11s} {'ledger s':>9s} {'val/mAP':>8s} {'test/mAP':>8s}")
        for label, t in rows:
            s = t.summary or {}
            print(f"{label:40s} {t.state:9s} {s.get('wall_time_s', float('nan')):11.2f} "
                  f"{(t.ended or 0) - (t.started or 0):9.2f} {(s.get('best') or {}).get('val/mAP', float('nan')):8.4f} "
                  f"{(s.get('test') or {}).get('test/mAP', float('nan')):8.4f}")
        print(f"training sweep ({args.epochs} epochs): {train_s:.1f} s wall; evaluation sweep ({args.trials} trials): "
              f"{eval_s:.1f} s wall, {eval_s / args.trials:.1f} s per trial with its kernel")


if __name__ == "__main__":
    main()
