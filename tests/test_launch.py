"""Multi-process training, launch scripts (dry run), preemption and checkpoint faults."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rhmdiff import train
from rhmdiff import checkpoints
from rhmdiff.metrics import read_metrics
from rhmdiff.tasks import rhm as rhm_task
from test_main import ROOT, TINY_RHM
from test_train import leaves, tiny_config

# one worker runs this file: its tests share a module fixture and start several processes
pytestmark = pytest.mark.xdist_group("launch")

CONFIG = "--config=configs/rhm_L3.py"


def metrics(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "train/steps_per_second"} for row in rows]


def cli(workdir, *extra, devices=4, **popen):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    cmd = [sys.executable, "-m", "rhmdiff.main", CONFIG, f"--workdir={workdir}", *TINY_RHM, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def multiprocess(workdir, *extra, **popen):
    """launch/local_multiprocess.sh with 2 processes x 2 fake CPU devices (gloo collectives),
    on a free port that the script picks itself."""
    cmd = ["bash", "launch/local_multiprocess.sh", "--", CONFIG, f"--workdir={workdir}", *TINY_RHM,
           "--config.coordinator_timeout=120", *extra]
    # without the session's persistent compilation cache: two processes sharing the suite's
    # cache directory is not what this test is about
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or "CACHE" not in k}
    return subprocess.Popen(cmd, cwd=ROOT, env=dict(env, PYTHON=sys.executable), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full") / "run"
    code, _, err = finish(cli(workdir, *LONG))
    assert code == 0, err[-2000:]
    return workdir


LONG = ["--config.train.num_steps=300", "--config.train.eval_every=100", "--config.train.steps_per_call=10"]
# two processes step ~10x slower than one (gloo collectives on 2 shared cores): fewer steps
MULTI_LONG = ["--config.train.num_steps=60", "--config.train.eval_every=20", "--config.train.steps_per_call=10"]


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _pid_of_process(launcher_pid: int, process_id: int) -> int | None:
    """The pid of rhmdiff process ``process_id`` started by this launcher (a descendant of
    ``launcher_pid``: never a process of another test or run)."""
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            ancestor = pid
            while ancestor > 1 and ancestor != launcher_pid:
                ancestor = _parent(ancestor)
        except (OSError, ValueError, IndexError):
            continue
        if (ancestor == launcher_pid and b"rhmdiff.main" in cmdline
                and f"RHMDIFF_PROCESS_ID={process_id}".encode() in environ):
            return pid
    return None


def test_two_processes_train_like_one_and_stop_together_on_sigterm(tmp_path):
    """2 processes x 2 fake CPU devices (gloo collectives). SIGTERM reaches only process 1 (as
    when one VM of a slice is preempted): JAX's preemption sync point makes both processes
    save the same step and exit 143. The rerun finishes exactly like one process x 4 devices
    at the same global batch, and the processes' parameters are asserted identical at every
    evaluation (train.check_replicas)."""
    single = tmp_path / "single"
    code, _, err = finish(cli(single, *MULTI_LONG))
    assert code == 0, err[-2000:]
    workdir = tmp_path / "run"
    proc = multiprocess(workdir, *MULTI_LONG, "--config.train.check_replicas=True")
    deadline = time.time() + 300
    while not (workdir / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    pid = _pid_of_process(proc.pid, 1)
    assert pid is not None and proc.poll() is None
    os.kill(pid, signal.SIGTERM)
    code, out, _ = finish(proc)
    assert code == 143, "\n".join([line for line in out.splitlines() if "SIGTERM" in line or "preempt" in line]
                                   + [out[-3000:]])
    assert "[process 1]" in out and "process 1 of 2, 2 local / 4 global devices" in out
    stops = dict(re.findall(r"\[process (\d)\] .*preempted at step (\d+): checkpoint saved", out))
    assert len(stops) == 2 and len(set(stops.values())) == 1, out[-3000:]  # both processes, one step
    step = int(next(iter(stops.values())))
    assert 0 < step < 60 and not (workdir / "results.json").exists()
    ckpt = checkpoints.Checkpoints(workdir)
    assert step in ckpt.latest.all_steps()
    ckpt.close()
    code, out, _ = finish(multiprocess(workdir, *MULTI_LONG, "--config.train.check_replicas=True"))
    assert code == 0, out[-3000:]
    for a, b in zip(metrics(workdir), metrics(single), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, err_msg=k)
    r_single, r_multi = (json.loads((d / "results.json").read_text()) for d in (single, workdir))
    assert r_single["accuracy"] == r_multi["accuracy"] and r_single["steps"] == r_multi["steps"]
    assert r_single["val_loss"] == pytest.approx(r_multi["val_loss"], rel=1e-5)


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    """``gs://`` URLs served from a local directory: an fsspec filesystem for epath (every
    workdir, results and metrics file) and orbax's tensorstore arrays sent to the same place
    (the two stand-ins for Google Cloud Storage this machine cannot reach)."""
    import fsspec
    from etils.epath import backend
    from fsspec.implementations.local import LocalFileSystem
    from orbax.checkpoint._src.path import gcs_utils
    from orbax.checkpoint._src.serialization import tensorstore_utils

    root = str(tmp_path / "gcs")
    os.makedirs(root)

    class FakeGCS(LocalFileSystem):
        protocol = ("gs", "gcs")

        def __init__(self, *args, finalize_on_close=None, **kwargs):
            super().__init__(*args, **kwargs)

        @classmethod
        def _strip_protocol(cls, path):
            path = fsspec.utils.stringify_path(path)
            path = path[len("gs://"):] if path.startswith("gs://") else path
            return (path if path.startswith(root) else os.path.join(root, path)).rstrip("/")

        def glob(self, path, **kwargs):
            return [p[len(root) + 1:] for p in super().glob(path, **kwargs)]

    previous = {p: fsspec.registry.get(p) for p in FakeGCS.protocol}
    for p in FakeGCS.protocol:
        fsspec.register_implementation(p, FakeGCS, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda *a, **k: False)
    monkeypatch.setattr(tensorstore_utils.gcs_utils, "get_kvstore_for_gcs",
                        lambda path: {"driver": "file", "path": os.path.join(root, path[len("gs://"):])})
    yield root
    for p, impl in previous.items():
        fsspec.register_implementation(p, impl or FakeGCS, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()


def test_gs_workdir_goes_through_epath(fake_gcs, tmp_path, monkeypatch):
    """A ``gs://`` workdir: every file of the run lands in the (fake) bucket, nothing in a local
    folder named ``gs:``; the rerun resumes from the bucket's checkpoints."""
    from conftest import run_task
    monkeypatch.chdir(tmp_path)
    c = tiny_config(num_steps=20)
    url = "gs://bucket/runs/tiny"
    first = run_task(c, url, stop_at=10)
    assert first is None and sorted(os.listdir(os.path.join(fake_gcs, "bucket/runs/tiny/checkpoints"))) == ["10"]
    out = run_task(c, url)
    assert out["steps"] == 20 and not os.path.exists(tmp_path / "gs:")
    stored = os.listdir(os.path.join(fake_gcs, "bucket/runs/tiny"))
    assert {"results.json", "generated.npy", "metrics.jsonl", "config.json", ".rhmdiff", "best"} <= set(stored)
    assert [r["step"] for r in read_metrics(url + "/metrics.jsonl")] == [10, 20]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_resumes_to_the_same_result(tmp_path, uninterrupted, sig):
    """Kill a run once its training has started (its metrics file exists; SIGTERM: it saves
    a checkpoint between evaluations and exits 143; SIGKILL: it just dies), rerun the same
    command: the metrics and the results equal those of an uninterrupted run."""
    workdir = tmp_path / "run"
    proc = cli(workdir, *LONG)
    deadline = time.time() + 300
    while not (workdir / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(sig)
    code, _, err = finish(proc)
    if sig == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM and "rerun the same command to resume" in err, err[-2000:]
        step = int(re.search(r"preempted at step (\d+)", err).group(1))
        ckpt = checkpoints.Checkpoints(workdir)
        assert max(ckpt.latest.all_steps()) == step  # saved where it stopped, with the partial metric sums
        ckpt.close()
    else:
        assert code == -signal.SIGKILL
    assert not (workdir / "results.json").exists()
    code, _, err = finish(cli(workdir, *LONG))
    assert code == 0, err[-2000:]
    assert metrics(workdir) == metrics(uninterrupted)
    r_full, r_resumed = (json.loads((d / "results.json").read_text()) for d in (uninterrupted, workdir))
    for key in ("accuracy", "val_loss", "best_step", "steps", "test_vb_bits", "memorized_fraction"):
        assert r_full[key] == r_resumed[key], key


def test_corrupted_latest_checkpoint_falls_back(tmp_path, caplog):
    c = tiny_config()
    kwargs = rhm_task.setup(c).fit_kwargs
    full = train.fit(c, str(tmp_path / "full"), **kwargs)
    train.fit(c, str(tmp_path / "cut"), stop_at=30, **kwargs)  # checkpoints at steps 20 and 30
    latest = tmp_path / "cut" / "checkpoints" / "30"
    for path in latest.rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"garbage")
    resumed = train.fit(c, str(tmp_path / "cut"), **kwargs)
    assert "does not load" in caplog.text
    for a, b in zip(leaves(full.params), leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)


def test_non_finite_losses_stop_the_run(tmp_path):
    c = tiny_config(lr=1e30, max_nonfinite=3)
    with pytest.raises(FloatingPointError, match="non-finite"):
        train.fit(c, str(tmp_path), **rhm_task.setup(c).fit_kwargs)


def test_workdir_with_another_config_is_refused(tmp_path):
    workdir = tmp_path / "run"
    (workdir).mkdir()
    (workdir / "config.json").write_text(json.dumps({"task": "rhm", "seed": 123}))
    (workdir / "results.json").write_text("{}")  # an old run's output
    (workdir / ".rhmdiff").write_text("{}")
    code, _, err = finish(cli(workdir))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "config.overwrite" in lines[0] and "different config" in lines[0], err
    assert (workdir / "results.json").exists()
    from rhmdiff import workdir as workdir_lib
    config = tiny_config()
    config.overwrite = True
    (workdir / "notes.txt").write_text("mine")  # not rhmdiff's: kept by overwrite
    workdir_lib.claim(config, str(workdir)).release()  # what the command does before training
    assert not (workdir / "results.json").exists() and (workdir / "notes.txt").read_text() == "mine"
    assert json.loads((workdir / "config.json").read_text())["model"]["width"] == 16
    config.overwrite = False
    workdir_lib.claim(config, str(workdir)).release()  # the same config again: accepted (a resume)


def test_batch_size_not_divisible_by_devices_is_refused(tmp_path):
    code, _, err = finish(cli(tmp_path / "run", "--config.train.batch_size=6"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "config.train.batch_size" in lines[0] and "4 devices" in lines[0], err
    assert not (tmp_path / "run").exists()


def test_launch_scripts_dry_run():
    run = lambda *args: subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    tpu = run("launch/tpu_vm.sh", "--dry_run", "--project", "proj", "--zone", "us-central2-b", "--tpu", "pod",
              "--config", "configs/rhm_L3.py:paper", "--workdir", "gs://b/runs/x",
              "--override", "--config.train.lr=0.1", "--delete").splitlines()
    assert tpu[0].startswith("gcloud compute tpus tpu-vm --project=proj --zone=us-central2-b create pod")
    assert sum("--worker=all" in line for line in tpu) == 3
    assert "pip\\ install\\ -e\\ \\'.\\[tpu\\,text\\]\\'" in tpu[3]
    assert "--config=configs/rhm_L3.py:paper\\ --workdir=gs://b/runs/x\\ --config.distributed=True" in tpu[4]
    assert "--config.train.lr=0.1" in tpu[4] and tpu[-1].strip().endswith("delete pod --quiet")
    slurm = run("launch/slurm.sh", "--dry_run", "--nodes", "2", "--gpus_per_node", "4",
                "--config", "configs/rhm_L3.py", "--workdir", "/shared/my runs/a").strip()
    assert slurm.startswith("sbatch --nodes=2 --ntasks-per-node=4 --gpus-per-node=4")
    assert slurm.endswith("--workdir=/shared/my\\ runs/a")
    local = run("launch/local_multiprocess.sh", "--dry_run", "--num_processes", "3", "--",
                CONFIG, "--workdir=/tmp/x").splitlines()
    assert len(local) == 3 and all(f"RHMDIFF_PROCESS_ID={i}" in line for i, line in enumerate(local))
    assert all("RHMDIFF_NUM_PROCESSES=3" in line and "JAX_COORDINATOR_ADDRESS=localhost:" in line for line in local)
    bad = subprocess.run(["bash", "launch/tpu_vm.sh", "--dry_run"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "--project is required" in bad.stderr


def test_no_source_file_is_ignored_by_git():
    """A pattern in .gitignore once hid two modules of rhmdiff/data from every clean clone."""
    try:
        listed = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--",
                                 "rhmdiff", "configs", "tests", "benchmarks", "launch", "setup.py", "README.md"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert [f for f in listed if "__pycache__" not in f and not f.endswith(".egg-info")] == []
