"""The benchmark scripts run (at tiny sizes) and print what their docstrings promise. Their
numbers are measurements, not test targets: only the keys and the sanity of values are checked."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def run_script(name: str, *args: str) -> list[dict]:
    """Run benchmarks/NAME with ARGS; the JSON objects it printed (one per line, or one indented)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", name), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.strip()
    try:
        return [json.loads(out)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_gpu_check_times_the_three_models_at_tiny_size():
    rows = run_script("gpu_check.py", "--size", "tiny", "--steps", "1")
    header, results = rows[0], rows[-1]["results"]
    assert header["backend"] == "cpu" and header["size"] == "tiny"
    assert [r["model"].split()[0] for r in results] == ["rhm_L3:paper", "md4_owt", "ddpm_imagenet64"]
    for r in results:
        assert r["ms_per_step"] > 0 and r["gflop_per_step"] > 0 and 0 < r["mfu"] < 1.5, r
        assert r["parameters"] > 1000 and r["loss"] == r["loss"], r  # not NaN


def test_bench_memory_reports_the_peak_of_a_few_steps_and_of_a_save_and_a_restore(tmp_path):
    (row,) = run_script("bench_memory.py", "--config", "configs/rhm_L3.py:paper", "--width", "64", "--steps", "2",
                        "--checkpoint", "--checkpoint_dir", str(tmp_path))
    assert row["variant"] == "reference" and row["width"] == 64
    # the reference U-Net's parameter count at v = 32, s = 2, L = 3 (models/unet.py docstring)
    C, v, s, L = 64, 32, 2, 3
    assert row["parameters"] == v * C + L * (s * C * C + 2 * C) + L * (2 * s * C * C + 2 * C) + 2 * C * v
    assert row["needed_gb"] == round(4 * row["parameters"] * 3 / 1e9, 2)  # parameters, gradients, momentum
    assert 0 < row["peak_rss_gb_before"] <= row["peak_rss_gb"] and row["ms_per_step"] > 0
    for phase in ("save", "restore"):  # the trainer's save and restore of the state, timed
        assert row[f"{phase}_s"] > 0 and 0 < row[f"{phase}_rss_gb_before"] <= row[f"{phase}_peak_rss_gb"]
    assert row["checkpoint_gb"] >= 0 and os.listdir(tmp_path) == []  # (its temporary workdir removed)


def test_profile_step_times_exclusive_per_operation(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from profile_step import dumped_hlo, exclusive_times, hlo_lines
    # a while loop (0-100 us) running a dot (10-40) and a fusion (50-60), a copy on another thread
    events = [{"name": "while.1", "tid": 1, "ts": 0.0, "dur": 100.0}, {"name": "dot.2", "tid": 1, "ts": 10.0, "dur": 30.0},
              {"name": "fusion.3", "tid": 1, "ts": 50.0, "dur": 10.0}, {"name": "copy.4", "tid": 2, "ts": 20.0, "dur": 5.0},
              {"name": "dot.2", "tid": 1, "ts": 120.0, "dur": 7.0}]
    assert exclusive_times(events) == {"while.1": 60.0, "dot.2": 37.0, "fusion.3": 10.0, "copy.4": 5.0}
    hlo = """HloModule m
%fused_computation.3 (p0: f32[4,4], p1: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  %dot.1 = f32[4,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %add.2 = f32[4,4]{1,0} add(%dot.1, %p1)
}
ENTRY %main (a: f32[4,4]) -> f32[4,4] {
  %a = f32[4,4]{1,0} parameter(0)
  ROOT %fusion.3 = f32[4,4]{1,0} fusion(%a, %a), kind=kCustom, calls=%fused_computation.3
}"""
    assert hlo_lines(hlo)["fusion.3"] == "f32[4,4]{1,0} fusion [dot, add]"
    # two programs named alike (every pmap is jit__fun): the one defining the traced operations
    other = "HloModule jit__fun\nENTRY %main (a: f32[4]) -> f32[4] {\n  ROOT %copy.1 = f32[4]{0} copy(%a)\n}"
    (tmp_path / "module_0001.jit__fun.cpu_after_optimizations.txt").write_text(other)
    (tmp_path / "module_0002.jit__fun.cpu_after_optimizations.txt").write_text(hlo.replace("HloModule m", "HloModule jit__fun"))
    (tmp_path / "module_0002.jit__fun.before_optimizations.txt").write_text(other)
    assert dumped_hlo(str(tmp_path), [("jit__fun", "fusion.3")])["jit__fun"]["fusion.3"].endswith("[dot, add]")
    assert dumped_hlo(str(tmp_path), [("jit__fun", "copy.1")])["jit__fun"]["copy.1"] == "f32[4]{0} copy"


def test_profile_step_reports_the_operations_of_a_few_steps():
    (row,) = run_script("profile_step.py", "--width", "32", "--steps", "2", "--top", "5")
    assert row["wall_ms_per_step"] > 0 and 0 < row["ops_ms_per_step"]
    assert len(row["top"]) == 5 and all(0 < op["share"] <= 1 and op["hlo"] for op in row["top"])
    assert [op["ms_per_step"] for op in row["top"]] == sorted((op["ms_per_step"] for op in row["top"]), reverse=True)


def test_profile_step_profiles_an_evaluation_loop():
    (row,) = run_script("profile_step.py", "--case", "d3pm_sampler", "--num", "4", "--T", "5", "--width", "16",
                        "--top", "3")
    assert row["case"] == "d3pm_sampler" and row["path"] == "device" and row["steps"] == 5
    assert row["wall_ms_per_step"] > 0 and len(row["top"]) == 3 and row["by_kind"]
    assert all(op["program"] == "jit__reverse_process" and op["hlo"] for op in row["top"]), row["top"]


def test_bench_eval_compares_the_loops_on_the_same_keys(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from measure import unet_forward_flops
    header, sampler, bound = run_script("bench_eval.py", "--num", "4", "--T", "5", "--width", "16", "--repeats", "1",
                                        "--cases", "d3pm_sampler", "d3pm_bound")
    assert header["matmul_gflops"] > 0 and header["cases"] == ["d3pm_sampler", "d3pm_bound"]
    assert sampler["case"] == "d3pm_sampler" and sampler["identical"] is True
    assert bound["case"] == "d3pm_bound" and bound["max_relative_difference"] < 1e-5
    for row in (sampler, bound):  # T network calls on each of the 4 sequences of d = 8 tokens
        assert row["gflop"] == 5 * 4 * unet_forward_flops(8, 2, 3, 16) / 1e9
        assert row["matmul_bound_s"] == pytest.approx(row["gflop"] / header["matmul_gflops"], rel=1e-2)
        assert row["loop_s"] > 0 and row["device_s"] > 0
