"""A trial's fixed cost: from the driver handing it to a kernel until its first optimizer step.

The same trials run twice in one process, as a sweep worker runs them (``runner.execute_notebook``
with a ``KernelPool``):

- **before**: what reid-sweep did until issue 18: the pooled kernel has imported nothing
  (no ``warm_up``), every trial decodes its images (``REID_SWEEP_CACHE_DIR=off``) and
  evaluates the untrained network (no ``REID_SWEEP_UNTRAINED_CACHE``);
- **after**: the pooled kernel imported torch, torchvision and reidlib while the previous trial ran,
  the decoded images come from the disk cache (the first trial writes it), the untrained evaluation
  from the sweep's cache (the first trial computes it).

Each trial runs a probe notebook that does what ``notebooks/train.ipynb`` does up to the first step,
one part per cell, and records the wall clock after each: kernel start (handed over until the first
cell runs), imports, config, dataset index, decode/cache, model build, untrained evaluation, first step
(one batch: forward, loss, backward, optimizer step). Two settings: the demo's config
(configs/synthetic.yml) and a Market-1501-sized synthetic set (~12,900 training and ~19,300
query/gallery images at 256x128, ResNet-50, generated once under ``--data``). Both hold out one
training identity in eight for validation, as sweeps do by default.

    .venv/bin/python benchmarks/trial_startup.py                # both settings, 3 trials per mode
    .venv/bin/python benchmarks/trial_startup.py --setting demo
    .venv/bin/python benchmarks/trial_startup.py --setting market --trials 2 --scale 0.05  # a quick check
    .venv/bin/python benchmarks/trial_startup.py --setting sweep --trials 4 --epochs 3  # whole sweeps
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reidlib.data.image_cache import CACHE_ENV  # noqa: E402
from reidlib.trial import UNTRAINED_CACHE_ENV  # noqa: E402

PARTS = ("kernel start", "imports", "config", "dataset index", "decode/cache", "model build",
         "untrained evaluation", "first step")
PROBE_CELLS = [
    ("parameters", 'config_file = ""\noverrides = {}\nhanded = 0.0'),
    ("kernel start", "import time\nmarks = [handed, time.time()]"),
    ("imports", "import torch, torchvision\nfrom reidlib import trial\nfrom reidlib.data import make_dataset\n"
                "from reidlib.data.build import make_data_loaders\nfrom reidlib.engine import seed_everything\n"
                "from reidlib.engine.trainer import evaluate_untrained\nfrom reidlib.losses import make_loss\n"
                "from reidlib.modeling import make_model\nfrom reidlib.solver import make_optimizer\n"
                "from reidlib.devices import resolve_device\nmarks.append(time.time())"),
    ("config", "trial.use_project_root()\ncfg = trial.build_config(config_file, overrides)\n"
               "device = resolve_device(cfg.MODEL.DEVICE)\nseed_everything(cfg.SEED)\nmarks.append(time.time())"),
    ("dataset index", "dataset = make_dataset(cfg)\nmarks.append(time.time())"),
    ("decode/cache", "loaders = make_data_loaders(cfg, dataset)\nmarks.append(time.time())"),
    ("model build", "model = make_model(cfg, loaders.num_classes).to(device)\nmarks.append(time.time())"),
    ("untrained evaluation", "initial = evaluate_untrained(cfg, model, loaders, device)\nmarks.append(time.time())"),
    ("first step", "model.train()\nloss_fn = make_loss(cfg, loaders.num_classes, model.in_planes).to(device)\n"
                   "optimizer = make_optimizer(cfg, model)\nimages, pids, _ = next(iter(loaders.train))\n"
                   "images, pids = images.to(device), pids.to(device)\nscores, feats = model(images)\n"
                   "loss = loss_fn(scores, feats, pids)\noptimizer.zero_grad()\nloss.backward()\noptimizer.step()\n"
                   "marks.append(time.time())\n"
                   "trial.glue('startup', {'marks': marks, 'initial': initial, 'loss': float(loss),\n"
                   "                       'images': len(dataset.train) + len(dataset.query) + len(dataset.gallery)})"),
]


def probe_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    for part, source in PROBE_CELLS:
        cell = nbformat.v4.new_code_cell(source)
        if part == "parameters":
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def settings(data: Path, scale: float) -> dict[str, tuple[str, dict]]:
    market_train_ids, market_test_ids = max(8, round(719 * scale)), max(8, round(1071 * scale))
    return {
        # the demo: 64 training identities, 8 held out (a sweep's default)
        "demo": (str(REPO / "configs" / "synthetic.yml"), {"DATASETS.VAL_IDS": 8}),
        # 719 x 6 cameras x 3 = 12,942 training images; 1,071 x 18 + 60 = 19,338 query + gallery
        "market": (str(REPO / "configs" / "synthetic.yml"), {
            "DATASETS.ROOT_DIR": str(data), "DATASETS.SYNTHETIC.NUM_TRAIN_IDS": market_train_ids,
            "DATASETS.SYNTHETIC.NUM_TEST_IDS": market_test_ids, "DATASETS.SYNTHETIC.NUM_CAMERAS": 6,
            "DATASETS.SYNTHETIC.IMAGES_PER_CAMERA": 3, "DATASETS.SYNTHETIC.IMAGE_SIZE": [256, 128],
            "DATASETS.VAL_IDS": market_train_ids // 8, "INPUT.SIZE_TRAIN": [256, 128], "INPUT.SIZE_TEST": [256, 128],
            "INPUT.PADDING": 10, "MODEL.NAME": "resnet50", "MODEL.DEVICE": "cpu", "SOLVER.IMS_PER_BATCH": 64,
            "TEST.IMS_PER_BATCH": 128}),
    }


def generate(config_file: str, overrides: dict) -> None:
    """The synthetic set written before anything is timed (a trial would otherwise generate it)."""
    from reidlib.data.synthetic import SyntheticSpec, ensure_synthetic
    from reidlib.trial import build_config

    s = build_config(config_file, overrides).DATASETS
    spec = SyntheticSpec(num_train_ids=s.SYNTHETIC.NUM_TRAIN_IDS, num_test_ids=s.SYNTHETIC.NUM_TEST_IDS,
                         num_cameras=s.SYNTHETIC.NUM_CAMERAS, images_per_camera=s.SYNTHETIC.IMAGES_PER_CAMERA,
                         image_size=tuple(s.SYNTHETIC.IMAGE_SIZE), seed=s.SYNTHETIC.SEED)
    ensure_synthetic(Path(s.ROOT_DIR) / "synthetic", spec)


def run_mode(probe: Path, work: Path, config_file: str, overrides: dict, trials: int, after: bool) -> list[dict]:
    from reidlib.sweep.runner import KernelPool, execute_notebook, notebook_warm_up
    from reidlib.sweep.workers import spare_after_first_epoch

    env = {CACHE_ENV: str(work / "cache"), UNTRAINED_CACHE_ENV: str(work / "untrained")} if after else {CACHE_ENV: "off"}
    env["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)  # as a one-worker sweep gives its kernel
    # the driver's policy: on a CPU worker the spare starts after the trial's first epoch (the probe has
    # none, so after it ends); in the "before" mode, at once (as until issue 18)
    pool = KernelPool(env, REPO, work / "kernels", notebook_warm_up(REPO / "notebooks" / "train.ipynb") if after else (),
                      spare_after_first_epoch=after and spare_after_first_epoch(env))
    results = []
    try:
        for i in range(trials):
            # trial 1 waits for its kernel as a sweep's first does; later ones find the spare ready, as
            # behind a trial longer than a kernel's start (and warm-up)
            pool.wait_ready()
            scraps = {}
            outcome = execute_notebook(probe, work / f"{'after' if after else 'before'}-{i}.ipynb",
                                       {"config_file": config_file, "overrides": overrides, "handed": time.time()},
                                       on_scrap=scraps.__setitem__, cwd=REPO, env=env, pool=pool)
            if outcome.error:
                raise SystemExit(f"probe trial failed: {outcome.error}")
            marks = scraps["startup"]["marks"]
            results.append({**dict(zip(PARTS, (b - a for a, b in zip(marks, marks[1:])))),
                            "total": marks[-1] - marks[0], "initial": scraps["startup"]["initial"],
                            "images": scraps["startup"]["images"]})
    finally:
        pool.close()
    return results


def table(name: str, before: list[dict], after: list[dict]) -> None:
    def first_and_later(rows, keys):
        values = [sum(r[k] for k in keys) for r in rows]
        return f"{values[0]:.2f} | {statistics.median(values[1:]) if values[1:] else float('nan'):.2f}"

    print(f"\n{name}: {before[0]['images']} images; seconds (later trials: the median)\n")
    print(f"| part | before: first trial | before: later trials ({len(before) - 1}) | after: first trial "
          f"| after: later trials ({len(after) - 1}) |")
    print("|---|---|---|---|---|")
    rows = [(part, (part,)) for part in PARTS] + [
        ("image data (dataset index + decode/cache)", ("dataset index", "decode/cache")),
        ("**handed over -> first step**", ("total",))]
    for label, keys in rows:
        print(f"| {label} | {first_and_later(before, keys)} | {first_and_later(after, keys)} |")
    same = all(r["initial"] == before[0]["initial"] for r in before + after)
    print(f"\nuntrained val/mAP {before[0]['initial'].get('val/mAP', float('nan')):.4f}, "
          f"{'the same' if same else 'NOT the same'} in every trial of both modes")


def sweep_walls(work: Path, trials: int, epochs: int, rounds: int) -> None:
    """Whole demo sweeps (the driver, hyperband off) on plain pooled kernels and on warm ones whose
    spare starts at once or after the running trial's first epoch, in rotating order: a spare imports
    torch while the previous trial trains, which only pays where that trial leaves the CPU idle (a GPU
    trial) and costs the trial itself where it does not."""
    from reidlib.sweep import driver, run_sweep

    declared, policy = driver.notebook_warm_up, driver.spare_after_first_epoch
    lrs = [3e-3, 1e-3, 3e-4, 1e-4, 2e-3, 5e-4, 2e-4, 5e-5][:trials]
    modes = ("plain", "warm, spare at once", "warm, spare after epoch 1")
    walls = {mode: [] for mode in modes}
    for i in range(rounds):
        for mode in modes[i % 3:] + modes[:i % 3]:
            driver.notebook_warm_up = declared if mode != "plain" else (lambda notebook: [])
            after_first_epoch = mode.endswith("epoch 1")
            driver.spare_after_first_epoch = lambda env, after=after_first_epoch: after
            spec = work / f"{modes.index(mode)}-{i}.yaml"
            spec.write_text(yaml.safe_dump({"name": f"mode{modes.index(mode)}-{i}", "config_file": str(REPO / "configs" / "synthetic.yml"),
                                            "method": "grid", "parameters": {"base_lr": {"values": lrs}},
                                            "defaults": {"max_epochs": epochs}}))
            start = time.perf_counter()
            result = run_sweep(spec, runs_dir=work / "runs", project_dir=REPO, wandb="disabled", progress=False)
            walls[mode].append((time.perf_counter() - start) / trials)
            if any(t.state != "finished" for t in result.trials):
                raise SystemExit(f"a {mode} trial did not finish")
    driver.notebook_warm_up, driver.spare_after_first_epoch = declared, policy
    print(f"\nwhole sweeps: {trials} demo trials of {epochs} epochs, {rounds} rounds, order rotated; seconds per trial\n")
    print("| kernels | per trial (median) | all rounds | ratio to plain |\n|---|---|---|---|")
    plain = statistics.median(walls["plain"])
    for mode, values in walls.items():
        print(f"| {mode} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} | "
              f"{statistics.median(values) / plain:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=("demo", "market", "both", "sweep"), default="both",
                        help="sweep: whole demo sweeps on warm and plain kernels (--trials per sweep)")
    parser.add_argument("--epochs", type=int, default=3, help="sweep: epochs per trial")
    parser.add_argument("--rounds", type=int, default=2, help="sweep: sweeps per kernel mode")
    parser.add_argument("--trials", type=int, default=3, help="trials per mode (the first 'after' one fills the caches)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the Market-size identities (a quick check)")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "reid-sweep-bench-data"),
                        help="where the Market-size synthetic set is generated (kept for the next run)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    os.chdir(REPO)
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    chosen = settings(Path(args.data) / f"scale-{args.scale:g}", args.scale)
    if args.setting == "sweep":
        with tempfile.TemporaryDirectory() as tmp:
            sweep_walls(Path(tmp), args.trials, args.epochs, args.rounds)
    for name in {"both": ("demo", "market"), "sweep": ()}.get(args.setting, (args.setting,)):
        config_file, overrides = chosen[name]
        generate(config_file, overrides)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            probe = probe_notebook(work / "probe.ipynb")
            before = run_mode(probe, work, config_file, overrides, args.trials, after=False)
            after = run_mode(probe, work, config_file, overrides, args.trials, after=True)
        table(name if args.scale == 1 or name == "demo" else f"{name} (scale {args.scale:g})", before, after)
    print(f"\ncpu: {os.cpu_count()} cores; python {sys.version.split()[0]}; benchmark wall time "
          f"{time.perf_counter() - start:.0f} s; 1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} "
          f"after (above {os.cpu_count()}: other work shared the CPU)")


if __name__ == "__main__":
    main()
