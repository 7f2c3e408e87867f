"""Run one trial: papermill executes the trial notebook in a fresh kernel of this environment.

A papermill engine of ours (``reid-sweep``) hands every scrap to a callback the moment the kernel
sends it, and saves the output notebook right then, so both the driver and any reader of the file
see each epoch while the trial runs. The kernel process ends with the trial, and its GPU memory
with it: the driver itself never touches CUDA.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import nbformat
import papermill
from jupyter_core.utils import run_sync
from nbclient.exceptions import DeadKernelError
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError
from papermill.iorw import LocalHandler, chdir, papermill_io

from reidlib import trial as contract
from reidlib.errors import SweepStateError
from reidlib.sweep.files import open_new, write_atomic
from reidlib.sweep.ledger import KERNEL_DIED

log = logging.getLogger(__name__)

KERNEL_NAME = "reid-sweep"
ENGINE_NAME = "reid-sweep"
# Environment variables a trial kernel never sees: credentials stay with the driver.
SECRET_ENV = re.compile(r"(_KEY|_TOKEN|_SECRET|_PASSWORD)$|^WANDB_API_KEY$", re.IGNORECASE)

ScrapCallback = Callable[[str, Any], None]
# A trial notebook names the modules a spare kernel may import before its trial starts, in its
# metadata (``{"reid_sweep": {"warm_up": ["torch", ...]}}``): what its own cells import anyway, so the
# warm-up never loads what the trial would not. A notebook that names none gets a plain kernel.
WARM_UP_METADATA = ("reid_sweep", "warm_up")
WARM_UP_TIMEOUT_S = 300


class TrialClient(PapermillNotebookClient):
    """papermill's client, plus: each scrap output is saved and forwarded as soon as it arrives,
    and the started kernel's process id is reported (so a driver can kill a hung kernel)."""

    def __init__(self, nb_man, on_scrap: ScrapCallback | None = None, on_kernel: Callable[[int], None] | None = None,
                 **kw):
        super().__init__(nb_man, **kw)
        self.on_scrap, self.on_kernel = on_scrap, on_kernel

    def papermill_execute_cells(self):
        pid = getattr(self.km.provisioner, "pid", None)
        if self.on_kernel and pid:
            self.on_kernel(pid)
        super().papermill_execute_cells()

    def process_message(self, *args, **kwargs):
        output = super().process_message(*args, **kwargs)
        scrap = contract.scrap_from_output(output) if output else None
        if scrap:
            self.nb_man.save()
            if self.on_scrap:
                try:
                    self.on_scrap(*scrap)
                except Exception:  # a failing listener must never kill the trial
                    log.exception("scrap listener failed on %s", scrap[0])
        return output


class TrialEngine(NBClientEngine):
    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None, stderr_file=None,
                                 start_timeout=60, execution_timeout=None, on_scrap=None, kernel_env=None,
                                 kernel_cwd=None, kernel_log=None, on_kernel=None, km=None, **kwargs):
        client = TrialClient(nb_man, km=km, on_scrap=on_scrap, on_kernel=on_kernel, timeout=execution_timeout,
                             startup_timeout=start_timeout,
                             kernel_name=kernel_name, log=log, log_output=log_output,
                             stdout_file=stdout_file, stderr_file=stderr_file,
                             shutdown_kernel="immediate")  # all outputs are in: no need to wait for a polite exit
        if km is not None:  # started ahead by a KernelPool: execute_notebook ends it
            return client.execute(cleanup_kc=True)  # nbclient only cleans up kernels it started
        start_kwargs = {k: v for k, v in (("env", kernel_env), ("cwd", kernel_cwd)) if v is not None}
        if kernel_log is None:
            return client.execute(**start_kwargs)
        with open_new(kernel_log) as stream:  # the kernel process's own stdout/stderr, for post-mortems
            return client.execute(stdout=stream, stderr=stream, **start_kwargs)


def _end(km) -> None:
    """Kill a kernel if it still runs, and free its manager's sockets (a sweep starts hundreds)."""
    if km.has_kernel:
        run_sync(km.shutdown_kernel)(now=True)
    km.context.destroy(linger=0)


class KernelPool:
    """One worker's next kernel, started while the current trial runs.

    Every trial still gets a fresh kernel process of its own, used once; it just need not wait for the
    kernel to boot nor for the imports: the spare imports ``warm_up`` (silently: the trial's cells still
    count from 1) before it is handed out, and initialises CUDA when it imports torch and its worker was
    given a GPU (``CUDA_VISIBLE_DEVICES``), never otherwise. Nothing else of a trial's state exists before its
    first cell: configs, seeds and data are the trial's own.

    ``spare_after_first_epoch``: the spare boots at once but imports ``warm_up`` only once the running trial
    has finished its first epoch (or ended), so its torch import never shares the cores with that trial's own
    start-up (on a CPU-bound trial, torch's threads then wait for each other: a first step 8x slower), while
    a trial shorter than an epoch's worth of imports still finds its next kernel booted.
    """

    def __init__(self, env: dict[str, str] | None, cwd: Path, log_dir: Path, warm_up: Sequence[str] = (),
                 spare_after_first_epoch: bool = False):
        self.env, self.cwd, self.log_dir = env, cwd, log_dir
        self.warm_up = warm_up_code(warm_up, cuda=bool((env or {}).get("CUDA_VISIBLE_DEVICES")))
        self.spare_after_first_epoch = spare_after_first_epoch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel-pool")
        self._spare: Future | None = None
        self._warm_up_may_start = threading.Event()
        self._closing = threading.Event()  # a spare still warming up when the sweep ends is not waited for

    def _start(self, warm_up_may_start: threading.Event | None = None):
        """``(kernel manager, its log file)`` of a booted kernel, warmed up once ``warm_up_may_start`` is set."""
        km, log_path = self._boot()
        if self.warm_up:
            if warm_up_may_start is not None:
                warm_up_may_start.wait()
            if not self._closing.is_set():
                self._warm_up(km)
        return km, log_path

    def _boot(self):
        from jupyter_client.manager import AsyncKernelManager

        self.log_dir.mkdir(parents=True, exist_ok=True)
        fd, log_path = tempfile.mkstemp(prefix=".kernel-", suffix=".log", dir=self.log_dir)
        km = AsyncKernelManager(kernel_name=ensure_kernelspec())
        with os.fdopen(fd, "w") as stream:  # the kernel keeps its own copy of the descriptor
            run_sync(km.start_kernel)(env=kernel_environment(self.env), cwd=str(self.cwd), stdout=stream, stderr=stream)
        return km, Path(log_path)

    def _warm_up(self, km) -> None:
        client = km.client()
        client.start_channels()
        deadline = time.monotonic() + WARM_UP_TIMEOUT_S
        try:
            run_sync(client.wait_for_ready)(timeout=WARM_UP_TIMEOUT_S)
            msg_id = client.execute(self.warm_up, silent=True, store_history=False)
            reply = None
            while reply is None or reply["parent_header"].get("msg_id") != msg_id:
                if self._closing.is_set() or time.monotonic() > deadline:
                    return
                try:
                    reply = run_sync(client.get_shell_msg)(timeout=0.1)
                except queue.Empty:
                    continue
            if reply["content"]["status"] != "ok":  # the trial's own imports will say what is wrong
                log.warning("kernel warm-up failed: %s", reply["content"].get("evalue"))
        except Exception:  # a cold kernel still runs the trial
            log.warning("kernel warm-up did not finish", exc_info=True)
        finally:
            client.stop_channels()

    def take(self):
        """``(kernel manager, its log file)`` of a started kernel; the next one boots now and warms up now
        (or, with ``spare_after_first_epoch``, when ``trial_progressed`` says so)."""
        spare = self._spare.result() if self._spare is not None else self._start()
        if self.spare_after_first_epoch:
            self._warm_up_may_start.clear()
        else:
            self._warm_up_may_start.set()
        self._spare = self._executor.submit(self._start, self._warm_up_may_start)
        return spare

    def trial_progressed(self) -> None:
        """The trial on the last kernel taken finished an epoch or ended: its spare may warm up."""
        self._warm_up_may_start.set()

    def wait_ready(self) -> None:
        """Block until the next kernel has started (and warmed up), as a trial that runs longer finds it."""
        if self._spare is not None:
            self._spare.result()

    def close(self) -> None:
        self._closing.set()
        self._warm_up_may_start.set()
        if self._spare is not None:
            try:
                km, log_path = self._spare.result()
                _end(km)
                log_path.unlink(missing_ok=True)
            except Exception:  # a spare that never started leaves nothing to clean
                log.debug("spare kernel did not start", exc_info=True)
            self._spare = None
        self._executor.shutdown(wait=True)


def notebook_warm_up(notebook: str | Path) -> list[str]:
    """The modules ``notebook`` lets a spare kernel import ahead (its metadata; none when unsaid)."""
    section, key = WARM_UP_METADATA
    modules = nbformat.read(str(notebook), as_version=4).metadata.get(section, {}).get(key, [])
    return [m for m in modules if isinstance(m, str) and re.fullmatch(r"[A-Za-z_][\w.]*", m)]


def warm_up_code(modules: Sequence[str], cuda: bool = False) -> str:
    if not modules:
        return ""
    code = "".join(f"import {module}\n" for module in modules)
    if cuda and "torch" in modules:
        code += "torch.cuda.is_available() and torch.cuda.init()\n"
    return code


papermill_engines.register(ENGINE_NAME, TrialEngine)


class AtomicLocalHandler(LocalHandler):
    """papermill's local files, each save written whole (``write_atomic``): a notebook read while its
    trial runs, or left by a crash or a full disk, is always a complete one, and a symlink planted
    at its name is replaced, not followed."""

    def write(self, buf, path):
        with chdir(self._cwd):
            write_atomic(path, buf)


# papermill takes the first 'local' handler registered as the one for local paths: replace it in place
papermill_io._handlers = [(scheme, AtomicLocalHandler() if scheme == "local" else handler)
                          for scheme, handler in papermill_io._handlers]


def ensure_kernelspec() -> str:
    """Make sure the ``reid-sweep`` kernel runs this very interpreter (not whatever ``python3``
    kernelspec a user has), installing it into this environment when missing or stale."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def current():
        try:
            return KernelSpecManager().get_kernel_spec(KERNEL_NAME).argv[0]
        except NoSuchKernel:
            return None

    if current() != sys.executable:
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL_NAME, display_name=f"reid-sweep ({sys.prefix})", prefix=sys.prefix)
        if current() != sys.executable:
            raise SweepStateError(f"kernel {KERNEL_NAME}", f"another kernelspec of that name shadows this "
                                  f"environment's ({sys.executable}); remove it with 'jupyter kernelspec remove'")
    return KERNEL_NAME


def kernel_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not SECRET_ENV.search(k)}
    env.update(extra or {})
    return env


@dataclass
class TrialOutcome:
    """How the notebook ended: ``error`` is None when every cell ran."""

    notebook: Path
    error: str | None = None
    error_cell: int | None = None
    kernel_died: bool = False


def execute_notebook(notebook: str | Path, output: str | Path, parameters: dict, on_scrap: ScrapCallback | None = None,
                  cwd: str | Path | None = None, env: dict[str, str] | None = None,
                  timeout: float | None = None, kernel_log: str | Path | None = None,
                  on_kernel: Callable[[int], None] | None = None, pool: KernelPool | None = None) -> TrialOutcome:
    """Execute ``notebook`` with ``parameters`` into ``output`` in a fresh kernel of this environment.

    The kernel process's own output (warnings, a crash's last words) goes to ``kernel_log``,
    by default beside the output notebook with a ``.log`` suffix.
    """
    output = Path(output)
    kernel_log = kernel_log or output.with_suffix(".log")
    output.parent.mkdir(parents=True, exist_ok=True)
    km = None
    if pool is not None:
        km, spare_log = pool.take()
        on_scrap = _on_first_epoch(pool.trial_progressed, on_scrap)
    try:
        if pool is not None:
            spare_log.replace(kernel_log)
        papermill.execute_notebook(
            str(notebook), str(output), parameters=parameters, engine_name=ENGINE_NAME,
            kernel_name=ensure_kernelspec(), progress_bar=False, log_output=False,
            execution_timeout=timeout, on_scrap=on_scrap, kernel_env=kernel_environment(env),
            kernel_cwd=str(cwd or Path.cwd()), kernel_log=kernel_log, on_kernel=on_kernel, km=km)
    except PapermillExecutionError as err:
        return TrialOutcome(output, error=f"{err.ename}: {err.evalue}".strip(), error_cell=err.cell_index)
    except DeadKernelError as err:
        return TrialOutcome(output, error=f"{KERNEL_DIED} ({str(err).splitlines()[0]}); see {kernel_log}", kernel_died=True)
    finally:
        if km is not None:  # also when papermill fails before it reaches the kernel (its first save, say)
            _end(km)
        if pool is not None:
            pool.trial_progressed()
    return TrialOutcome(output)


def _on_first_epoch(progressed: Callable[[], None], on_scrap: ScrapCallback | None) -> ScrapCallback:
    def scrap(name: str, data: Any) -> None:
        if name.startswith(contract.EPOCH_PREFIX):
            progressed()
        if on_scrap is not None:
            on_scrap(name, data)
    return scrap
