"""Shared fixtures: a tiny synthetic dataset and config made in a temp dir (nothing downloads), one
small sweep run end to end (shared by the tests that read what a sweep leaves), and headless Chromium
for the browser tests."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def lab_python() -> str:
    """make test's JupyterLab, in its own environment (Makefile: .venv-lab); the kernels run in this one.
    Missing (a test file run alone in a fresh checkout): the test fails saying how to build it."""
    path = os.environ.get("REID_SWEEP_LAB_PYTHON", str(REPO / ".venv-lab" / "bin" / "python"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"JupyterLab's environment is missing ({path}): `make test` builds it "
                    "(or `make .venv-lab/.installed`)", pytrace=False)
    return path


TINY_CONFIG = {
    "MODEL": {"DEVICE": "cpu", "NAME": "resnet18", "PRETRAIN_CHOICE": "none"},
    "INPUT": {"SIZE_TRAIN": [32, 16], "SIZE_TEST": [32, 16], "PADDING": 2},
    "DATASETS": {"NAMES": "synthetic",
                 "SYNTHETIC": {"NUM_TRAIN_IDS": 8, "NUM_TEST_IDS": 6, "NUM_CAMERAS": 2,
                               "IMAGES_PER_CAMERA": 2, "IMAGE_SIZE": [32, 16]}},
    "DATALOADER": {"NUM_WORKERS": 0, "SAMPLER": "softmax_triplet", "NUM_INSTANCE": 2},
    "SOLVER": {"MAX_EPOCHS": 2, "BASE_LR": 0.003, "STEPS": [10], "WARMUP_ITERS": 1, "EVAL_PERIOD": 1,
               "CHECKPOINT_PERIOD": 100, "IMS_PER_BATCH": 8},
    "TEST": {"IMS_PER_BATCH": 64},
}


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    """A YACS file for a seconds-long CPU trial on a tiny generated dataset (shared by the session)."""
    root = tmp_path_factory.mktemp("tiny")
    config = {**TINY_CONFIG, "DATASETS": {**TINY_CONFIG["DATASETS"], "ROOT_DIR": str(root / "data")},
              "OUTPUT_DIR": str(root / "out")}
    path = root / "tiny.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def write_spec(tmp_path, tiny_config):
    """Write a sweep YAML (a dict, ``config_file`` defaulting to the tiny config) and return its path."""

    def write(spec: dict, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump({"config_file": str(tiny_config), **spec}))
        return path

    return write


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """``run_cli(*argv, cwd=REPO)``: the ``reid-sweep`` CLI run in this process, ``(exit code, stdout,
    stderr)``. A subprocess would pay seconds of imports per case; the tests about the process itself
    (its exit status from ``python -m``, what it imports) start one."""
    from reidlib import cli

    def run(*argv: str, cwd: Path = REPO) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = cli.main(list(argv))
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


LRS = [0.0003, 0.003, 0.03]


@pytest.fixture(scope="session")
def sweep(tmp_path_factory, tiny_config):
    """A 3-trial grid sweep through the real driver (papermill kernels, offline wandb), with its
    report: ``(SweepResult, make_report's outputs)``. Run once per session: it takes half a minute."""
    from reidlib.sweep import run_sweep
    from reidlib.workflow import make_report

    runs = tmp_path_factory.mktemp("runs")
    spec = tmp_path_factory.mktemp("spec") / "grid.yaml"
    spec.write_text(json.dumps({"name": "e2e", "method": "grid", "config_file": str(tiny_config),
                                "parameters": {"base_lr": {"values": LRS}, "max_epochs": 2}}))
    result = run_sweep(spec, runs_dir=runs, project_dir=REPO, wandb="offline", progress=False)
    return result, make_report(result.directory, REPO)


@pytest.fixture(scope="session", autouse=True)
def image_cache_dir(tmp_path_factory):
    """Trials' decoded-image cache (``reidlib.data.image_cache``) in the session's temp dir, not ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("image-cache")
        patch.setenv("REID_SWEEP_CACHE_DIR", str(path))
        yield path


@pytest.fixture(autouse=True)
def no_inherited_wandb_service(monkeypatch):
    """wandb puts its service's address in os.environ (WANDB_SERVICE) once a test used it in-process;
    a CLI run by a later test would then write its runs through that service, not its own."""
    monkeypatch.delenv("WANDB_SERVICE", raising=False)


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Chromium's own connections (updates, sync, field trials) are refused on a closed network: none tried.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's headless Chromium (``chromium`` and ``chromium-driver``; ``make test`` installs them)
    through Selenium, with a fresh profile."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)}: not installed; apt-get install chromium chromium-driver (make test does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    with pytest.MonkeyPatch.context() as patch:  # selenium-manager downloads browsers and drivers: never here
        patch.setattr(SeleniumManager, "binary_paths", lambda *_: pytest.fail("selenium-manager was called"))
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on its test (``item.report_call``...): fixtures that keep evidence of a
    failure (the browser tests' screenshots) read it."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
