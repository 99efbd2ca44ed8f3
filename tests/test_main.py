"""The command line: the oracle task end to end, and one-line errors on bad configs."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(workdir, *overrides):
    cmd = [sys.executable, "-m", "rhmdiff.main", "--config=configs/rhm_oracle.py", f"--workdir={workdir}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_oracle_task_writes_results(tmp_path):
    workdir = tmp_path / "oracle"
    proc = run_main(workdir, "--config.diffusion.T=100", "--config.diffusion.beta_max=0.2",
                    "--config.eval.num_generated=128", "--config.data.test_size=64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((workdir / "results.json").read_text())
    assert len(results["accuracy"]) == 3 and results["accuracy"] == [1.0, 1.0, 1.0]
    assert min(results["factorized_accuracy"]) >= 0.95
    assert results["num_generated"] == 128
    assert results["vb_bits_per_token"] >= results["entropy_bits_per_token"] - 0.05
    assert results["config"]["diffusion"]["T"] == 100


@pytest.mark.parametrize("override, field", [
    ("--config.rhm.m=9", "config.rhm.m"),
    ("--config.rhm.v=-1", "config.rhm.v"),
    ("--config.data.test_size=-3", "config.data.test_size"),
    ("--config.task=nope", "config.task"),
    ("--config.diffusion.schedule=quadratic", "config.diffusion.schedule"),
    ("--config.data.test_size=100000", "config.data.train_size"),
    ("--config.rhm.nonexistent=1", "nonexistent"),
    ("--config.rhm.m=abc", "config.rhm.m"),
])
def test_bad_config_is_one_line_error(tmp_path, override, field):
    workdir = tmp_path / "bad"
    proc = run_main(workdir, override)
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not workdir.exists()
