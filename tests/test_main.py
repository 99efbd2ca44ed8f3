"""The command line: the oracle task end to end, and one-line errors on bad configs."""
import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(workdir, *overrides, config="configs/rhm_oracle.py"):
    """The command line in a subprocess; a run that succeeds must have written only outputs its
    task declares."""
    from conftest import undeclared_outputs
    cmd = [sys.executable, "-m", "rhmdiff.main", f"--config={config}", f"--workdir={workdir}", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode == 0 and "--check" not in overrides:
        assert not undeclared_outputs(workdir), undeclared_outputs(workdir)
    return proc


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
    assert proc.stdout.strip().splitlines()[-1] == f"results: {workdir / 'results.json'}"  # after its summary


TINY_RHM = ["--config.rhm.v=4", "--config.rhm.m=2", "--config.data.train_size=64", "--config.data.val_size=32",
            "--config.data.test_size=16", "--config.model.width=16", "--config.diffusion.T=20",
            "--config.train.num_steps=40", "--config.train.eval_every=20", "--config.train.steps_per_call=10",
            "--config.train.batch_size=8", "--config.eval.num_generated=32"]


def test_rhm_task_trains_generates_and_resumes(tmp_path):
    """configs/rhm_L3.py end to end on a tiny grammar; rerunning the finished command
    resumes from its checkpoint (no training left) and reproduces results.json."""
    workdir = tmp_path / "rhm"
    proc = run_main(workdir, *TINY_RHM, config="configs/rhm_L3.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((workdir / "results.json").read_text())
    for key in ("accuracy", "num_generated", "memorized_fraction", "train_size", "steps", "val_loss",
                "novel_valid_fraction", "test_vb_bits", "oracle_vb_bits"):
        assert key in results, key
    assert len(results["accuracy"]) == 3 and results["num_generated"] == 32 and results["train_size"] == 64
    assert results["steps"] == 40 and results["test_vb_bits"] >= results["oracle_vb_bits"] - 0.05
    assert "A_1=" in proc.stdout and "copies of training points" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith(f"results: {workdir / 'results.json'}")
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40]
    assert list((workdir / "tensorboard").iterdir()) and (workdir / "checkpoints").is_dir()
    assert np.load(workdir / "generated.npy").shape == (32, 8)
    again = run_main(workdir, *TINY_RHM, config="configs/rhm_L3.py")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((workdir / "results.json").read_text())["accuracy"] == results["accuracy"]
    assert (workdir / "metrics.jsonl").read_text().count("\n") == 2
    recompute_generation_metrics(results, np.load(workdir / "generated.npy"))


def recompute_generation_metrics(results, generated):
    """results.json's generation metrics recomputed from generated.npy and the run's training
    split, with the brute-force validity of tests/conftest.py and Python set membership."""
    import ml_collections

    from conftest import brute_valid
    from rhmdiff import from_config
    from test_rhm import _brute_positions_valid
    config = ml_collections.ConfigDict(results["config"])
    g = from_config.grammar(config)
    train = {tuple(r) for r in np.asarray(from_config.splits(config, g)["train"][0])}
    copies = np.array([tuple(r) in train for r in generated])
    valid = np.array([brute_valid(g, r) for r in generated])
    levels = [_brute_positions_valid(g, r) for r in generated]
    per_sequence = np.array([[all(lv[l]) for l in range(g.L)] for lv in levels])
    per_position = np.array([[np.mean(lv[l]) for l in range(g.L)] for lv in levels])
    assert results["memorized_fraction"] == pytest.approx(copies.mean())
    # the copies of a sampler of the exact (uniform) distribution: P over the enumerated language
    from conftest import enumerate_language
    assert results["copy_null"] == pytest.approx(len(train) / len(enumerate_language(g)), rel=1e-12)
    assert results["valid_fraction"] == pytest.approx(valid.mean())
    assert results["novel_valid_fraction"] == pytest.approx((valid & ~copies).mean())
    np.testing.assert_allclose(results["accuracy"], per_sequence.mean(0), rtol=1e-6)
    np.testing.assert_allclose(results["tuple_accuracy"], per_position.mean(0), rtol=1e-6)
    if (~copies).any():
        np.testing.assert_allclose(results["novel_accuracy"], per_sequence[~copies].mean(0), rtol=1e-6)


def test_online_config_trains_on_fresh_samples(tmp_path):
    workdir = tmp_path / "online"
    proc = run_main(workdir, *TINY_RHM, config="configs/rhm_online.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["online"] and results["train_size"] is None and results["memorized_fraction"] == 0.0
    assert results["steps"] == 40 and len(results["accuracy"]) == results["config"]["rhm"]["L"] == 4


BAD_CONFIGS = [
    ("--config.rhm.m=9", "config.rhm.m"),
    ("--config.rhm.v=-1", "config.rhm.v"),
    ("--config.data.test_size=-3", "config.data.test_size"),
    ("--config.task=nope", "config.task"),
    ("--config.diffusion.schedule=quadratic", "config.diffusion.schedule"),
    ("--config.data.test_size=100000", "config.data.train_size"),
    ("--config.rhm.s=1", "config.rhm.s"),
    ("--config.rhm.L=0", "config.rhm.L"),
    ("--config.seed=-1", "config.seed"),
    ("--config.diffusion.T=0", "config.diffusion.T"),
    ("--config.diffusion.beta_max=2.0", "config.diffusion.beta_max"),
    ("--config.diffusion.beta_min=0.5", "config.diffusion.beta_max"),
    ("--config.eval.num_generated=0", "config.eval.num_generated"),
    ("--config.train.lr=-1.0", "config.train.lr", "configs/rhm_L3.py"),
    ("--config.train.momentum=1.5", "config.train.momentum", "configs/rhm_L3.py"),
    ("--config.model.width=0", "config.model.width", "configs/rhm_L3.py"),
    ("--config.model.time_conditioning=film", "config.model.time_conditioning", "configs/rhm_L3.py"),
    ("--config.model.variant=big", "config.model.variant", "configs/rhm_L3.py"),
    ("--config.diffusion.objective=mse", "config.diffusion.objective", "configs/rhm_L3.py"),
    ("--config.train.optimizer=lbfgs", "config.train.optimizer", "configs/rhm_L3.py"),
    ("--config.data.val_size=0", "config.data.val_size", "configs/rhm_L3.py"),
    ("--config.train.batch_size=2000 --config.data.train_size=1000", "config.train.batch_size", "configs/rhm_L3.py"),
    ("--config.train.max_nonfinite=0", "config.train.max_nonfinite", "configs/rhm_L3.py"),
    ("--config.rhm.L=40", "config.rhm.L", "configs/rhm_L3.py"),
    ("--config.seed=100000000000000000000", "config.seed", "configs/rhm_L3.py"),
    ("--config.sweep.train_sizes=(1000000,) --config.sweep.relative_sizes=()", "config.sweep.train_sizes",
     "configs/sweep_P.py"),
    ("--config.sweep.relative_sizes=(1e9,)", "config.sweep.train_sizes", "configs/sweep_P.py"),
    ("--config.sweep.check_seeds=(7,)", "config.sweep.check_seeds", "configs/sweep_P.py"),
    ("--config.sweep.thresholds=(1.5,)", "config.sweep.thresholds", "configs/sweep_P.py"),
    ("--config.sensitivity.t=0", "config.sensitivity.t", "configs/sensitivity.py"),
    ("--config.train.lr_schedule=step", "config.train.lr_schedule", "configs/md4_owt_tiny.py"),
    ("--config.train.ema_decay=1.5", "config.train.ema_decay", "configs/md4_owt_tiny.py"),
    ("--config.train.num_steps=0", "config.train.num_steps", "configs/md4_owt_tiny.py"),
    ("--config.model.positions=alibi", "config.model.positions", "configs/md4_owt_tiny.py"),
    ("--config.model.head_dim=7", "config.model.head_dim", "configs/md4_owt_tiny.py"),
    ("--config.diffusion.schedule=geometric", "config.diffusion.schedule", "configs/md4_owt_tiny.py"),
    ("--config.eval.top_p=1.5", "config.eval.top_p", "configs/md4_owt_tiny.py"),
    ("--config.data.path=", "config.data.path", "configs/md4_owt_tiny.py"),
    ("--config.analysis.distances=()", "config.analysis.distances", "configs/text_analysis.py"),
]


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_the_field(case, inputs):
    """The command line's validation, in process (parsing: the subprocess test below): the
    config with the overrides applied fails with a ConfigError that names the field."""
    from conftest import load_config, with_inputs
    from rhmdiff import tasks
    from rhmdiff.config_check import ConfigError

    override, field, path = (*case, "configs/rhm_oracle.py")[:3]
    config = with_inputs(load_config(os.path.basename(path)[:-3]), inputs)

    def validate(config):
        tasks.load(config.task).validate(config)

    validate(config)  # the config file itself is fine
    for arg in override.split():
        keys, value = arg[len("--config."):].split("=", 1)
        *parents, leaf = keys.split(".")
        node = config
        for key in parents:
            node = node[key]
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        node[leaf] = float(value) if isinstance(node[leaf], float) and isinstance(value, int) else value
    with pytest.raises(ConfigError, match="^" + field.replace(".", r"\.") + ":"):
        validate(config)


@pytest.mark.parametrize("override, field", [
    ("--config.rhm.m=9", "config.rhm.m"),  # a bad value
    ("--config.rhm.nonexistent=1", "nonexistent"),  # an unknown key
    ("--config.rhm.m=abc", "config.rhm.m"),  # a wrong type
])
def test_bad_config_is_one_line_error(tmp_path, override, field):
    workdir = tmp_path / "bad"
    proc = run_main(workdir, *override.split())
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not workdir.exists()


def test_clustering_sweep_task_and_figures_command(tmp_path):
    workdir = tmp_path / "clu"
    proc = run_main(workdir, "--config.sweep.m_values=(2, 3)", "--config.sweep.L_values=(2,)",
                    "--config.sweep.num_seeds=1", "--config.sweep.P_max=20000", "--config.sweep.num_P=8",
                    config="configs/clustering_sweep.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((workdir / "clustering_sweep.json").read_text())
    assert len(results["curves"]) == 4 and {r["context"] for r in results["summary"]} == {"token", "tuple"}
    assert all(r["p_star"][0][0]["mean_curve"] < r["p_star"][0][1]["mean_curve"]  # m = 3 needs more data
               for r in results["summary"])
    png = workdir / "clustering_sweep.png"
    assert png.stat().st_size > 0
    png.unlink()
    replot = subprocess.run([sys.executable, "-m", "rhmdiff.analysis.figures", str(workdir)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert replot.returncode == 0 and png.exists(), replot.stderr[-2000:]
    diffusion = tmp_path / "sweep"  # a diffusion-model sweep on the same grammars, as the sweep task writes it
    diffusion.mkdir()
    from rhmdiff.analysis.sample_complexity import p_star_statistics
    grid = [100, 1000, 10000]
    stars = [{"m": m, "seeds": [0], "thresholds": [p_star_statistics(grid, [curve], t) for t in (0.5, 0.8)]}
             for m, curve in ((2, [0.4, 0.9, 1.0]), (3, [0.1, 0.6, 0.95]))]
    (diffusion / "sweep.json").write_text(json.dumps({"task": "sweep", "L": 2, "v": 16, "s": 2, "points": [],
                                                      "thresholds": [0.5, 0.8], "p_star": stars}))
    more = tmp_path / "sweep_m4"  # the same grammars at another m (another budget): pooled with the first
    more.mkdir()
    more_stars = [{"m": 4, "seeds": [0], "thresholds": [p_star_statistics(grid, [[0.05, 0.3, 0.9]], t)
                                                        for t in (0.5, 0.8)]}]
    (more / "sweep.json").write_text(json.dumps({"task": "sweep", "L": 2, "v": 16, "s": 2, "points": [],
                                                 "thresholds": [0.5, 0.8], "p_star": more_stars}))
    out = tmp_path / "p_star.png"
    compare = subprocess.run([sys.executable, "-m", "rhmdiff.analysis.figures", "p_star", str(out), str(workdir),
                              str(diffusion), str(more)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert compare.returncode == 0 and out.stat().st_size > 0, compare.stderr[-2000:]
    fits = json.loads((tmp_path / "p_star.json").read_text())["exponents"]
    half = next(e for e in fits if e["threshold"] == 0.5 and e["of"] == "metric")
    pooled = [row["thresholds"][0]["per_seed"][0] for row in stars + more_stars]
    assert half["m"] == [2, 3, 4] and half["exponent"] == pytest.approx(np.polyfit(np.log([2, 3, 4]),
                                                                                     np.log(pooled), 1)[0])
    assert f"m^{half['exponent']:.2f}" in compare.stdout
    ratios = json.loads((tmp_path / "p_star.json").read_text())["ratios"]
    token = {(r["m"], r["threshold"]): r for r in ratios if r["variant"] == "token"}
    for m, row in ((2, results["summary"][0]), (3, results["summary"][0])):  # the paired ratio of seed 0
        clustering_star = row["p_star"][0][[2, 3].index(m)]["per_seed"][0]
        diffusion_star = stars[[2, 3].index(m)]["thresholds"][0]["per_seed"][0]
        assert token[m, 0.5]["per_seed"] == [pytest.approx(diffusion_star / clustering_star)]
    twice = subprocess.run([sys.executable, "-m", "rhmdiff.analysis.figures", "p_star", str(out), str(diffusion),
                            str(diffusion)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert twice.returncode == 1 and twice.stderr.strip().splitlines() == [
        "rhmdiff: error: the sweeps both measured m = 2, 3: pool sweeps over distinct m"], twice.stderr
    missing = subprocess.run([sys.executable, "-m", "rhmdiff.analysis.figures", "p_star", str(out), str(tmp_path)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and "no clustering_sweep.json" in missing.stderr


def test_convergence_check_rows_and_training_noise(monkeypatch, tmp_path):
    """The convergence check on fake trainings (A_L set per variant): each variant's config, the
    difference and its binomial standard error written out by hand, the training noise as a
    plain loop."""
    from conftest import load_config
    from rhmdiff.tasks import sweep
    config = load_config("sweep_P")
    config.sweep.update(m_values=(3,), check_thresholds=(0.5,))
    A = {"": 0.50, "steps2x": 0.52, "width2x": 0.43, "reseed": 0.48}  # base: 4096 sequences, variants 1024
    asked = []

    def fake_run_points(config, jobs):
        asked.extend(jobs)
        out = []
        for c, d in jobs:
            variant = d.name.split("_seed0")[1].lstrip("_")
            acc = A[variant] - (0.02 if variant == "reseed" and "P654" in d.name else 0.0)
            out.append({"accuracy": [1.0, 1.0, acc], "num_generated": 4096 if not variant else 1024, "best_step": 7})
        return out
    monkeypatch.setattr(sweep, "run_points", fake_run_points)
    stars = [{"m": 3, "thresholds": [{"mean_curve": 500.0} if t == 0.5 else {"mean_curve": np.nan}
                                     for t in config.sweep.thresholds]}]
    rows = sweep.convergence_check(config, tmp_path, stars)
    assert [(r["m"], r["P"]) for r in rows] == [(3, 413), (3, 654)]  # the grid points nearest 500 in log P
    by_name = {d.name: c for c, d in asked}
    assert by_name["m3_P413_seed0_steps2x"].train.num_steps == 2 * config.train.num_steps
    assert by_name["m3_P413_seed0_width2x"].model.width == 2 * config.model.width
    assert (by_name["m3_P413_seed0_reseed"].seed, by_name["m3_P413_seed0_reseed"].rhm.seed) == (1000, 0)
    assert by_name["m3_P413_seed0"].eval.num_generated == config.sweep.check_generated
    first = rows[0]
    assert first["steps2x"]["difference"] == pytest.approx(0.02)
    assert first["steps2x"]["se"] == pytest.approx(np.sqrt(0.5 * 0.5 / 4096 + 0.52 * 0.48 / 1024))
    assert first["steps2x"]["passed"] and not first["width2x"]["passed"]  # 0.02 < 0.03 and < 2 x 0.017; 0.07 is not
    diffs = []
    for row in rows:
        diffs.append(row["reseed"]["difference"])
    rms = (sum(d * d for d in diffs) / len(diffs)) ** 0.5
    noise = sweep.training_noise(rows)
    assert noise["rms"] == pytest.approx(np.sqrt((0.02 ** 2 + 0.04 ** 2) / 2)) == pytest.approx(rms)
    assert (noise["points"], noise["width_doublings_within_2rms"]) == (2, 0)  # |-0.07| > 0.063 at both points


def test_sweep_summary_names_the_criterion_of_each_exponent():
    from rhmdiff.tasks import sweep
    fit = {"threshold": 0.5, "exponent": 2.5, "ci": [2.0, 3.0], "theory": 3}
    text = sweep.summary({"p_star": [], "convergence": [],
                          "exponents": [{**fit, "of": "metric"}, {**fit, "exponent": 2.75, "of": "above_chance"}]})
    assert text.splitlines() == ["P* vs m at A_L = 0.5: exponent 2.50 [2.00, 3.00] (theory L + 1 = 3)",
                                 "P* vs m at A_L above chance = 0.5: exponent 2.75 [2.00, 3.00] (theory L + 1 = 3)"]


def test_sweep_task_trains_each_point_once(tmp_path):
    workdir = tmp_path / "sweep"
    args = [*TINY_RHM, "--config.sweep.train_sizes=(16, 64)", "--config.sweep.relative_sizes=()",
            "--config.sweep.m_values=(2,)", "--config.sweep.seeds=(0,)", "--config.sweep.check_seeds=()",
            "--config.train.num_steps=20", "--config.train.eval_every=10", "--config.data.test_size=0",
            "--config.eval.num_generated=16", "--config.data.val_size=16", "--config.eval.val_draws=2"]
    proc = run_main(workdir, *args, config="configs/sweep_P.py")
    assert proc.returncode == 0 and "m2_P16_seed0: training" in proc.stderr, proc.stderr[-2000:]
    results = json.loads((workdir / "sweep.json").read_text())
    assert [(p["m"], p["P"]) for p in results["points"]] == [(2, 16), (2, 64)]
    assert (workdir / "sweep.png").stat().st_size > 0 and (workdir / "m2_P64_seed0" / "results.json").exists()
    again = run_main(workdir, *args, config="configs/sweep_P.py")
    assert again.returncode == 0 and again.stderr.count(": training") == 0, again.stderr[-2000:]
    assert json.loads((workdir / "sweep.json").read_text())["points"] == results["points"]
    online = workdir / "online_run"  # an online run has no P: skipped (its best/ is never read)
    (online / "best").mkdir(parents=True)
    (online / "results.json").write_text(json.dumps({"train_size": None}))
    sens_dir = tmp_path / "sensitivity"  # Fig. 6 on the sweep's trained points
    sens = run_main(sens_dir, f"--config.sensitivity.sources=('{workdir}/*',)", "--config.sensitivity.num_data=32",
                    config="configs/sensitivity.py")
    assert sens.returncode == 0, sens.stderr[-2000:]
    runs = json.loads((sens_dir / "sensitivity.json").read_text())["runs"]
    assert [r["P"] for r in runs] == [16, 64] and (sens_dir / "sensitivity.png").exists()
    assert set(runs[0]["sensitivity"]) == {f"{side}_{k}" for side in ("encoder", "decoder") for k in (1, 2, 3)}
    assert all(len(s_l) == 3 and min(s_l) >= 0 for r in runs for s_l in r["sensitivity"].values())
    assert set(runs[0]["initial"]) == set(runs[0]["sensitivity"]) and len(runs[0]["tokens"]) == 3
    table = json.loads((sens_dir / "sensitivity.json").read_text())["crossings"]
    assert [(c["level"], c["reset"], c["block"]) for c in table] == [(2, 1, "encoder_3"), (3, 2, "encoder_3")]
    corr_dir = tmp_path / "correlations"  # Fig. 1c on the sweep's trained points
    corr_args = [f"--config.correlations.sources=('{workdir}/m2_P*_seed?',)", "--config.correlations.num_generated=32",
                 "--config.correlations.num_data=48"]
    corr = run_main(corr_dir, *corr_args, config="configs/correlations.py")
    assert corr.returncode == 0, corr.stderr[-2000:]
    res = json.loads((corr_dir / "correlations.json").read_text())
    assert [c["name"] for c in res["curves"]] == ["RHM data", "P = 16", "P = 64"]
    assert [c["num"] for c in res["curves"]] == [48, 32, 32] and len(res["theory"]) == 8
    samples = np.load(corr_dir / "samples_m2_P64_seed0.npy")
    assert samples.shape == (32, 8)
    row = next(r for r in res["runs"] if r["P"] == 64)
    from rhmdiff.analysis.correlations import token_correlation
    np.testing.assert_allclose(row["correlation"][1:], token_correlation(samples, 4)[1:], rtol=1e-12)
    assert len(row["near_training"]) == 9 and row["near_training"][-1] == 1.0  # d = 8: every row within 8
    assert np.all(np.diff(row["near_training"]) >= 0) and len(row["data_near_training"]) == 9
    again = run_main(corr_dir, *corr_args, config="configs/correlations.py")  # the samples are read back
    assert again.returncode == 0 and "generating" not in again.stderr
    score = tmp_path / "score_error"  # the denoisers against the Bayes-optimal one
    errs = run_main(score, f"--config.score_error.sources=('{workdir}/*',)", "--config.score_error.num_data=32",
                    "--config.score_error.num_t=3", config="configs/score_error.py")
    assert errs.returncode == 0, errs.stderr[-2000:]
    res = json.loads((score / "score_error.json").read_text())
    assert [r["P"] for r in res["runs"]] == [16, 64] and res["runs"][0]["t"] == [1, 4, 20]
    assert all(len(e["mean"]) == 3 for r in res["runs"] for e in r["level_kl"])
    assert max(abs(m) for e in res["oracle"]["token_kl"] for m in [e["mean"]]) < 1e-4
    assert (score / "score_error.png").stat().st_size > 0
    none = run_main(tmp_path / "none", f"--config.sensitivity.sources=('{tmp_path}/nothing*',)",
                    config="configs/sensitivity.py")
    assert none.returncode != 0 and "sensitivity.sources" in none.stderr.splitlines()[-1]


def test_onestep_task(tmp_path):
    workdir = tmp_path / "onestep"
    proc = run_main(workdir, "--config.sweep.m_values=(2,)", "--config.sweep.num_seeds=1",
                    "--config.sweep.P_max=3000", "--config.sweep.num_P=5", config="configs/onestep.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    curve = json.loads((workdir / "onestep.json").read_text())["curves"][0]["separability"]
    assert curve[-1] > curve[0] and (workdir / "onestep.png").exists()


def config_presets():
    """(file name, preset) of every preset of every file in configs/ (the names passed to
    ``check_preset`` or the ``cpu_L3`` style branches; the default preset otherwise)."""
    import re
    out = []
    for name in sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py")):
        text = open(os.path.join(ROOT, "configs", f"{name}.py")).read()
        found = re.findall(r"check_preset\(preset, \(([^)]*)\)\)", text)
        presets = [p.strip().strip("'\"") for p in found[0].split(",") if p.strip()] if found else []
        presets += [p for p in re.findall(r'preset == "(\w+)"', text) if p not in presets]
        out += [(name, p) for p in presets] or [(name, None)]
    return out


@pytest.mark.parametrize("name, preset", config_presets(), ids=lambda x: str(x))
def test_every_config_preset_passes_check(tmp_path, inputs, name, preset):
    """Every preset of every config file loads and validates (``--check``), its input paths
    pointed at small stand-ins, and writes nothing."""
    from conftest import execute, load_config, with_inputs
    config = with_inputs(load_config(name, *([preset] if preset else [])), inputs)
    code, err = execute(config, tmp_path / "w", check=True)
    assert code == 0, err
    assert not (tmp_path / "w").exists()


def test_module_imports_flow_one_way():
    """No import cycles among rhmdiff's modules (module-level imports); the model of the data
    (rhm, bp, theory) imports no models or training, and analysis/ never imports tasks/."""
    import ast
    pkg = os.path.join(ROOT, "rhmdiff")
    graph = {}
    for folder, _, names in os.walk(pkg):
        for f in names:
            if not f.endswith(".py"):
                continue
            path = os.path.join(folder, f)
            mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
            deps = set()
            for node in ast.parse(open(path).read()).body:
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rhmdiff"):
                    deps |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names if a.name.startswith("rhmdiff")}
            graph[mod] = deps
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for d in graph[m]:
            assert state.get(d) != "open", f"import cycle: {' -> '.join(stack + [m, d])}"
            if d not in state:
                visit(d, stack + [m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])
    for m, deps in graph.items():
        if m.startswith("rhmdiff.analysis"):
            assert not any(d.startswith("rhmdiff.tasks") for d in deps), m
        if m.startswith("rhmdiff.tasks."):  # tasks share helpers through modules, not through other tasks,
            allowed = {"rhmdiff.tasks", "rhmdiff.tasks.finish", m}  # except the sweeps of rhm runs
            if m in ("rhmdiff.tasks.sweep", "rhmdiff.tasks.mup_transfer"):
                allowed.add("rhmdiff.tasks.rhm")
            assert {d for d in deps if d.startswith("rhmdiff.tasks")} <= allowed, m
        if m in ("rhmdiff.rhm", "rhmdiff.bp", "rhmdiff.theory"):
            assert not any(d.startswith(("rhmdiff.models", "rhmdiff.train", "rhmdiff.tasks")) for d in deps), m
