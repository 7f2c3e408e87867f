"""What makes a trial start fast, and that it changes nothing a trial computes: the decoded-image cache
(stale keys, corruption, two first writers), the untrained evaluation once per sweep, the warm kernel."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from reidlib import trial
from reidlib.data import image_cache

TRAIN_NOTEBOOK = REPO / "notebooks" / "train.ipynb"

SIZE = (8, 4)


def write_images(directory, count, seed=0):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        path = directory / f"{i:04d}.png"  # lossless: what is read back is what was written
        Image.fromarray(rng.integers(0, 256, (12, 6, 3), dtype=np.uint8)).save(path)
        samples.append((str(path), i, 0))
    return samples


def decoder(samples, size=SIZE):
    """``decode_images`` that counts its calls."""
    from reidlib.data.cached import decode_images

    calls = []

    def decode():
        calls.append(1)
        return decode_images(samples, size).numpy()

    return decode, calls


def cached(directory, samples, size=SIZE):
    decode, calls = decoder(samples, size)
    return image_cache.load_or_decode(directory, "set-train", samples, size, decode), len(calls)


def test_a_split_is_decoded_once_and_mapped_after(tmp_path):
    from reidlib.data.cached import decode_images

    samples = write_images(tmp_path / "img", 5)
    first, decoded = cached(tmp_path / "cache", samples)
    again, decoded_again = cached(tmp_path / "cache", samples)
    assert (decoded, decoded_again) == (1, 0)
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, decode_images(samples, SIZE).numpy())
    np.testing.assert_array_equal(first, again)


def test_a_changed_image_list_or_size_never_reads_a_stale_file(tmp_path):
    from reidlib.data.cached import decode_images

    samples = write_images(tmp_path / "img", 5)
    cache = tmp_path / "cache"
    cached(cache, samples)
    # one image rewritten in place, same name (a re-extracted dataset)
    Image.fromarray(np.zeros((12, 6, 3), dtype=np.uint8)).save(samples[2][0])
    os.utime(samples[2][0], ns=(time.time_ns() + 10**9,) * 2)
    images, decoded = cached(cache, samples)
    assert decoded == 1 and not images[2].any()
    np.testing.assert_array_equal(images, decode_images(samples, SIZE).numpy())
    # another input size, another subset of the split: decoded, not read from the others
    for other_samples, size in ((samples, (4, 2)), (samples[1:], SIZE)):
        images, decoded = cached(cache, other_samples, size)
        assert decoded == 1
        np.testing.assert_array_equal(images, decode_images(other_samples, size).numpy())
    assert len(list(cache.glob("*.u8"))) == 4


@pytest.mark.parametrize("damage", ["truncate", "checked image", "end marker", "header"])
def test_a_corrupt_cache_is_rebuilt_with_one_warning(tmp_path, caplog, damage):
    samples = write_images(tmp_path / "img", 6)
    cache = tmp_path / "cache"
    good, _ = cached(cache, samples)
    good = np.array(good)
    [path] = cache.glob("*.u8")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "checked image":  # the first image is always among the checked ones
        data[image_cache.HEADER_BYTES + 5] ^= 0xFF
    elif damage == "end marker":
        data[-3:] = b"\0\0\0"
    else:
        data[:8] = b"garbage!"
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="reidlib.data.image_cache"):
        images, decoded = cached(cache, samples)
        again, decoded_again = cached(cache, samples)
    assert (decoded, decoded_again) == (1, 0)
    np.testing.assert_array_equal(images, good)
    np.testing.assert_array_equal(again, good)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()


WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from reidlib.data import image_cache

    samples, go = json.loads(sys.argv[1]), Path(sys.argv[2])
    decoded = []

    def decode():  # slow enough that both writers are inside at once without the lock
        decoded.append(1)
        time.sleep(1.0)
        return np.arange(len(samples) * 3 * 8 * 4, dtype=np.uint64).astype(np.uint8).reshape(len(samples), 3, 8, 4)

    while not go.exists():
        time.sleep(0.01)
    images = image_cache.load_or_decode(Path(sys.argv[3]), "set-train", [tuple(s) for s in samples], [8, 4], decode)
    print(json.dumps({"decoded": len(decoded), "sum": int(images.astype(np.int64).sum())}))
""")


def test_two_first_writers_make_one_correct_file(tmp_path):
    import json

    samples = write_images(tmp_path / "img", 4)
    cache, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(samples), str(go), str(cache)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    results = []
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        results.append(json.loads(out))
    expected = int(np.arange(4 * 3 * 8 * 4, dtype=np.uint64).astype(np.uint8).astype(np.int64).sum())
    assert sorted(r["decoded"] for r in results) == [0, 1]  # the second waited and mapped the first's file
    assert [r["sum"] for r in results] == [expected, expected]
    assert [p.suffix for p in cache.iterdir() if not p.name.endswith(".lock")] == [".u8"]  # no temporary left
    images, decoded = cached(cache, samples, (8, 4))
    assert decoded == 0 and int(images.astype(np.int64).sum()) == expected


def test_clean_cache_removes_the_images(tmp_path, monkeypatch, capsys):
    from reidlib.cli import main

    monkeypatch.setenv(image_cache.CACHE_ENV, str(tmp_path / "cache"))
    cached(image_cache.images_dir(), write_images(tmp_path / "img", 3))
    assert main(["clean-cache"]) == 0
    assert "removed 2 files" in capsys.readouterr().out  # the images and their lock
    assert not image_cache.images_dir().exists()
    monkeypatch.setenv(image_cache.CACHE_ENV, "off")
    assert image_cache.images_dir() is None
    assert main(["clean-cache"]) == 0 and "off" in capsys.readouterr().out


def test_the_untrained_evaluation_runs_once_for_the_same_weights_and_split(tiny_config, tmp_path, monkeypatch):
    import torch

    from reidlib.config import load_config
    from reidlib.data.build import make_data_loaders
    from reidlib.engine import seed_everything, trainer
    from reidlib.modeling import make_model

    cfg = load_config(str(tiny_config), {"DATASETS.VAL_IDS": 3})
    loaders = make_data_loaders(cfg)
    device = torch.device("cpu")

    def model(seed):
        seed_everything(seed)
        return make_model(cfg, loaders.num_classes)

    evaluations = []
    real = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: evaluations.append(1) or real(*a, **k))
    monkeypatch.delenv(trial.UNTRAINED_CACHE_ENV, raising=False)
    alone = trainer.evaluate_untrained(cfg, model(0), loaders, device)  # no sweep: evaluated, nothing kept
    monkeypatch.setenv(trial.UNTRAINED_CACHE_ENV, str(tmp_path / "untrained"))
    first = trainer.evaluate_untrained(cfg, model(0), loaders, device)
    second = trainer.evaluate_untrained(cfg, model(0), loaders, device)  # another trial, same seed
    assert len(evaluations) == 2 and alone == first == second and "val/mAP" in second
    other = trainer.evaluate_untrained(cfg, model(1), loaders, device)  # other weights: evaluated
    assert len(evaluations) == 3 and other == real(cfg, model(1), loaders, device, "val")[0]
    other_split = load_config(str(tiny_config), {"DATASETS.VAL_IDS": 2})
    trainer.evaluate_untrained(other_split, model(0), make_data_loaders(other_split), device)  # same weights
    assert len(evaluations) == 4  # another validation split: evaluated


def test_a_pooled_kernel_has_imported_torch_before_its_trial(tmp_path):
    import nbformat

    from reidlib.sweep.runner import KernelPool, execute_notebook, notebook_warm_up

    source = tmp_path / "probe.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys\nfrom reidlib import trial\ntrial.glue('torch', 'torch' in sys.modules)")])
    nbformat.write(nb, source)
    seen = {}
    for warm in (True, False):
        pool = KernelPool(None, REPO, tmp_path / "kernels", notebook_warm_up(TRAIN_NOTEBOOK) if warm else ())
        try:
            outcome = execute_notebook(source, tmp_path / f"{warm}.ipynb", {}, on_scrap=seen.__setitem__,
                                       cwd=REPO, pool=pool)
        finally:
            pool.close()
        assert outcome.error is None and seen["torch"] is warm
        # the warm-up ran silently: the trial's first cell is still cell 1
        assert nbformat.read(tmp_path / f"{warm}.ipynb", as_version=4).cells[0].execution_count == 1


@pytest.mark.parametrize("env, waits", [({}, True), ({"CUDA_VISIBLE_DEVICES": "0"}, False)])
def test_a_cpu_workers_spare_imports_after_the_running_trials_first_epoch(tmp_path, env, waits):
    """On a CPU worker the next kernel boots at once but imports torch only once the running trial has
    trained an epoch or ended, never beside its start-up; a worker with its own GPU warms it at once."""
    import threading

    from reidlib.sweep.runner import KernelPool, _on_first_epoch
    from reidlib.sweep.workers import spare_after_first_epoch

    pool = KernelPool(env, REPO, tmp_path, warm_up=["json"], spare_after_first_epoch=spare_after_first_epoch(env))
    booted, warmed = [], []
    spare_booted, spare_warmed = threading.Event(), threading.Event()

    def boot():
        booted.append(len(booted) + 1)
        if len(booted) > 1:
            spare_booted.set()
        return booted[-1], tmp_path / f"{booted[-1]}.log"

    def warm_up(km):
        warmed.append(km)
        if len(warmed) > 1:
            spare_warmed.set()

    pool._boot, pool._warm_up = boot, warm_up  # no kernel processes: the policy alone
    try:
        assert pool.take()[0] == 1 and warmed[0] == 1  # the first trial's kernel, started and warmed on demand
        assert spare_booted.wait(timeout=5)  # the next one boots beside the trial
        seen = []
        on_scrap = _on_first_epoch(pool.trial_progressed, lambda name, data: seen.append(name))
        on_scrap(trial.CONFIG, {})  # glued before training: not yet
        assert spare_warmed.wait(timeout=0.3) is not waits
        on_scrap(trial.epoch_scrap_name(1), {"epoch": 1})
        assert spare_warmed.wait(timeout=5)
        assert seen == [trial.CONFIG, trial.epoch_scrap_name(1)]  # every scrap still reaches the driver
        assert pool.take()[0] == 2 and warmed == [1, 2]
        deadline = time.monotonic() + 5
        while booted != [1, 2, 3] and time.monotonic() < deadline:  # the third boots beside the second trial
            time.sleep(0.01)
        assert booted == [1, 2, 3]
    finally:
        pool.close()
    if waits:
        assert warmed == [1, 2]  # the spare that waited for the second trial's epoch never imported


def test_a_notebook_names_what_its_spare_kernel_imports(tmp_path):
    """Only what the trial notebook declares is imported ahead: a notebook that declares nothing (a
    quick evaluation, a test's fake trial) gets a plain kernel, not five seconds of torch."""
    import nbformat

    from reidlib.sweep.runner import notebook_warm_up, warm_up_code

    assert {"torch", "torchvision", "reidlib.trial"} <= set(notebook_warm_up(TRAIN_NOTEBOOK))
    assert "torch" in notebook_warm_up(REPO / "notebooks" / "evaluate.ipynb")
    plain = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), plain)
    assert notebook_warm_up(plain) == [] and warm_up_code([]) == ""
    declared = nbformat.v4.new_notebook(metadata={"reid_sweep": {"warm_up": ["json", "os; import shutil", 3]}})
    nbformat.write(declared, plain)
    assert notebook_warm_up(plain) == ["json"]  # a module name, nothing else, reaches the kernel
    assert warm_up_code(["torch"], cuda=True).endswith("torch.cuda.init()\n")
    assert "cuda" not in warm_up_code(["torch"], cuda=False) + warm_up_code(["json"], cuda=True)


def test_a_trial_on_a_warm_kernel_computes_what_a_cold_one_does(tiny_config, tmp_path):
    from reidlib.sweep.runner import KernelPool, execute_notebook, notebook_warm_up

    notebook = REPO / "notebooks" / "train.ipynb"
    results = {}
    for name in ("cold", "warm"):
        pool = KernelPool(None, REPO, tmp_path / "kernels", notebook_warm_up(notebook)) if name == "warm" else None
        scraps = {}
        try:
            outcome = execute_notebook(notebook, tmp_path / f"{name}.ipynb",
                                       {"config_file": str(tiny_config), "max_epochs": 2, "seed": 3,
                                        "overrides": {"DATASETS.VAL_IDS": 3},
                                        "output_dir": str(tmp_path / name)}, on_scrap=scraps.__setitem__,
                                       cwd=REPO, pool=pool)
        finally:
            if pool is not None:
                pool.close()
        assert outcome.error is None
        results[name] = scraps
    timings = ("time/epoch_s", "wall_time_s", "checkpoint")
    cold, warm = ({k: ({m: v for m, v in s.items() if m not in timings} if isinstance(s, dict) else s)
                   for k, s in r.items() if k != trial.CONFIG} for r in (results["cold"], results["warm"]))
    assert cold == warm and cold[trial.SUMMARY]["best"]["val/mAP"] > 0
    assert [k for k in cold if k.startswith(trial.EPOCH_PREFIX)] == ["epoch/0001", "epoch/0002"]


def test_a_sweep_evaluates_the_untrained_network_once(write_spec, tmp_path):
    from reidlib.sweep import run_sweep

    spec = write_spec({"name": "untrained", "method": "grid", "parameters": {
        "base_lr": {"values": [0.003, 0.03]}, "max_epochs": 1, "TEST.EVAL_BEFORE_TRAINING": "yes"}})
    result = run_sweep(spec, runs_dir=tmp_path / "runs", project_dir=REPO, wandb="disabled", progress=False)
    filed = list((result.directory / "cache" / "untrained").glob("*.json"))
    notebooks = [trial.read_trial_notebook(t.notebook)[2]["untrained"] for t in result.trials]
    ledger = [t.summary["untrained"] for t in result.trials]
    # two learning rates, one seed and architecture: one evaluation, every trial reports it
    assert len(filed) == 1 and len(ledger) == 2 and "val/mAP" in ledger[0]
    assert all(i == ledger[0] for i in ledger + notebooks)


def test_compiled_kernels_are_cached_per_sweep_unless_the_user_chose_a_place(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/mine/triton")
    env = trial.sweep_cache_environment(tmp_path)
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path.resolve() / "cache" / "inductor")
    assert "TRITON_CACHE_DIR" not in env  # the kernel inherits the user's
    assert env[trial.UNTRAINED_CACHE_ENV] == str(tmp_path.resolve() / "cache" / "untrained")


def test_a_kill_before_the_kernel_is_handed_over_lands_when_it_is(tmp_path):
    """A time limit can run out while the trial still waits for its warming kernel."""
    from reidlib.sweep.processes import RunningTrials

    running = RunningTrials()
    running.add("trial-001", str(tmp_path))
    running.kill("trial-001")  # no kernel yet
    kernel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    running.kernel_started("trial-001", kernel.pid)
    assert kernel.wait(timeout=10) == -9
