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


def _train_until_stopped(marker: str):
    """A stand-in for a sweep point in a worker: the trainer's stop check, until it stops."""
    with train._Preemption() as stop:
        open(marker, "w").close()
        while not stop.reached():
            time.sleep(0.02)
        raise train.Preempted("stopped", stop.reached())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_sweep_stops_its_workers(tmp_path, sig):
    """sweep.workers > 1: a SIGTERM or a Ctrl-C of the sweep's process reaches the trainers in its
    workers (each stops as on a preemption), the call not started is cancelled, no worker is left
    running, and the sweep stops with Preempted (exit 128 + the signal)."""
    import threading

    from rhmdiff.tasks import sweep
    markers = [str(tmp_path / f"worker{i}") for i in range(3)]

    def signal_once_both_train():
        deadline = time.time() + 120
        while sum(os.path.exists(m) for m in markers) < 2 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), sig)

    threading.Thread(target=signal_once_both_train, daemon=True).start()
    with pytest.raises(train.Preempted, match="of 3 calls unfinished") as stopped:
        sweep.in_workers(_train_until_stopped, [(m,) for m in markers], 2)
    assert stopped.value.signum == sig and sum(os.path.exists(m) for m in markers) >= 2
    assert signal.getsignal(signal.SIGTERM) is not None and not [  # handlers restored, no worker left
        p for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == os.getpid() and
        b"spawn_main" in open(f"/proc/{p}/cmdline", "rb").read()]


def test_ctrl_c_is_a_clean_stop_with_exit_130(tmp_path):
    """Ctrl-C (SIGINT) once training has started: a checkpoint where it stopped, exit 130, the
    one-line message last on stderr, no traceback."""
    workdir = tmp_path / "run"
    proc = cli(workdir, *LONG)
    deadline = time.time() + 300
    while not (workdir / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    last = err.strip().splitlines()[-1]
    assert code == 130 and "Traceback" not in err, err[-3000:]
    step = int(re.fullmatch(rf"rhmdiff: interrupted \(Ctrl-C\) at step (\d+); checkpoint saved in {workdir}; rerun "
                            "the same command to resume", last).group(1))
    ckpt = checkpoints.Checkpoints(workdir)
    assert max(ckpt.latest.all_steps()) == step
    ckpt.close()


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


def launcher(*args, cwd=ROOT):
    """``bash launch/...`` as a user runs it (PYTHON: this interpreter): ``(exit code, stdout, stderr)``."""
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=ROOT)
    proc = subprocess.run(["bash", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


TPU = ["--project", "proj", "--zone", "us-central2-b", "--tpu", "pod"]


def test_launch_scripts_dry_run():
    """Each launcher checks the config here first (``--check``: its line on stderr), then prints
    its commands: the TPU install with the constraints, the config checked again on worker 0, the
    job detached (setsid nohup, its log in a file) and the command that follows the log."""
    code, out, err = launcher("launch/tpu_vm.sh", "--dry_run", *TPU, "--config", "configs/rhm_L3.py:paper",
                              "--workdir", "gs://b/runs/x", "--override", "--config.train.lr=0.1", "--delete")
    tpu = out.splitlines()
    assert code == 0 and "rhmdiff: config OK (task rhm)" in err, err
    assert tpu[0].startswith("gcloud compute tpus tpu-vm --project=proj --zone=us-central2-b create pod")
    assert tpu[1].endswith("archive --format=tar.gz -o /tmp/rhmdiff.XXXXXX/rhmdiff.tar.gz HEAD ")
    assert "pip\\ install\\ -e\\ \\'.\\[tpu\\,text\\]\\'\\ -c\\ constraints.txt" in tpu[3]
    assert "--worker=0" in tpu[4] and tpu[4].rstrip().endswith("--check\\ \\>\\ /dev/null")
    assert "setsid\\ nohup\\ python\\ -m\\ rhmdiff.main\\ --config=configs/rhm_L3.py:paper\\ " \
           "--workdir=gs://b/runs/x\\ --config.distributed=True\\ --config.train.lr=0.1\\ \\>\\ rhmdiff.log" in tpu[5]
    assert "--worker=all" in tpu[5] and tpu[-1].strip().endswith("delete pod --quiet")
    assert "follow its log with: gcloud compute tpus tpu-vm --project=proj --zone=us-central2-b ssh pod " \
           "--worker=0 --command=tail\\ -F\\ rhmdiff/rhmdiff.log" in err
    code, out, err = launcher("launch/slurm.sh", "--dry_run", "--nodes", "2", "--gpus_per_node", "4",
                              "--config", "configs/rhm_L3.py", "--workdir", "/shared/my runs/a")
    assert code == 0 and out.startswith("sbatch --nodes=2 --ntasks-per-node=4 --gpus-per-node=4"), err
    assert out.strip().endswith("--workdir=/shared/my\\ runs/a") and "start a new run in /shared/my runs/a" in err
    code, out, err = launcher("launch/local_multiprocess.sh", "--dry_run", "--num_processes", "3", "--",
                              CONFIG, "--workdir=/tmp/x")
    local = out.splitlines()
    assert code == 0 and len(local) == 3 and all(f"RHMDIFF_PROCESS_ID={i}" in line for i, line in enumerate(local))
    assert all("RHMDIFF_NUM_PROCESSES=3" in line and "JAX_COORDINATOR_ADDRESS=localhost:" in line for line in local)
    code, _, err = launcher("launch/tpu_vm.sh", "--dry_run")
    assert code == 2 and "--project is required" in err


@pytest.mark.parametrize("args, needle", [
    (["launch/tpu_vm.sh", "--dry_run", "--ship_dirty", *TPU, "--config", "configs/rhm_L3.py:papr", "--workdir",
      "gs://b/x"],
     "rhmdiff: error: flag --config=configs/rhm_L3.py:papr: Error whilst parsing config file: ValueError: preset "
     "must be one of ['cpu', 'paper'], got 'papr'"),
    (["launch/slurm.sh", "--dry_run", "--config", "configs/rhm_L3.py", "--workdir", "/tmp/w", "--override",
      "--config.train.lrr=1"], "rhmdiff: error: config.train.lrr: the config has no such key; did you mean "
                               "config.train.lr?"),
    (["launch/slurm.sh", "--dry_run", "--nodes", "abc", "--config", "configs/rhm_L3.py", "--workdir", "/tmp/w"],
     "slurm.sh: --nodes must be a positive integer, got 'abc'"),
    (["launch/local_multiprocess.sh", "--dry_run", "--", CONFIG, "--workdir=/tmp/w", "--config.rhm.m=9"],
     "rhmdiff: error: config.rhm.m: must be <= v**(s-1) = 8"),
], ids=["tpu preset", "slurm key", "slurm nodes", "local value"])
def test_launchers_stop_on_a_bad_config_before_any_command(args, needle):
    """With --dry_run as without: a bad value stops the launcher with the check's one line and
    exit 2; no sbatch, gcloud or process command is printed (so none would run)."""
    code, out, err = launcher(*args)
    assert code == 2 and out == "" and err.strip().splitlines() == [err.strip()] and err.startswith(needle), err


def test_a_launcher_stops_on_a_workdir_the_run_would_refuse(tmp_path):
    """A workdir holding a run with another config: the launcher's check gives the line the run
    would give (exit 2), before sbatch."""
    from conftest import load_config
    from rhmdiff.workdir import experiment
    run, config = tmp_path / "run", load_config("rhm_L3")
    run.mkdir()
    stored = experiment(config)
    stored["train"]["lr"] = 0.5
    (run / "config.json").write_text(json.dumps(stored))
    (run / "results.json").write_text("{}")
    (run / ".rhmdiff").write_text("{}")
    code, out, err = launcher("launch/slurm.sh", "--dry_run", "--config", "configs/rhm_L3.py", "--workdir", str(run))
    assert code == 2 and out == "" and err.startswith(f"rhmdiff: error: --workdir {run}: holds a run with a "
                                                      f"different config (config.train.lr: 0.5 -> {config.train.lr!r})")


def test_tpu_launcher_refuses_a_dirty_tree_unless_asked_to_ship_it(tmp_path):
    """A checkout with uncommitted changes: refused (exit 2, before any command); --dry_run says
    what it would refuse; --ship_dirty ships the files as they are (tar of the working tree)."""
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    (repo / "launch" / "tpu_vm.sh").write_text(open(os.path.join(ROOT, "launch", "tpu_vm.sh")).read())
    (repo / "configs").symlink_to(os.path.join(ROOT, "configs"))
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    (repo / "notes.txt").write_text("an edit")
    args = ["launch/tpu_vm.sh", *TPU, "--config", "configs/rhm_L3.py", "--workdir", "gs://b/x"]
    code, out, err = launcher(*args, cwd=repo)
    assert code == 2 and out == "" and "uncommitted changes (1 paths in git status)" in err and "--ship_dirty" in err
    code, out, err = launcher(*args, "--dry_run", cwd=repo)
    assert code == 0 and "tpu_vm.sh: would refuse: the working tree has uncommitted changes" in err
    code, out, err = launcher(*args, "--dry_run", "--ship_dirty", cwd=repo)
    assert code == 0 and "would refuse" not in err and "tar -czf" in out and "archive" not in out


def test_no_source_file_is_ignored_by_git():
    """A pattern in .gitignore once hid two modules of rhmdiff/data from every clean clone."""
    try:
        listed = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--",
                                 "rhmdiff", "configs", "tests", "benchmarks", "launch", "setup.py", "pyproject.toml",
                                 "constraints.txt", "constraints-min.txt", "README.md"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert [f for f in listed if "__pycache__" not in f and not f.endswith(".egg-info")] == []
