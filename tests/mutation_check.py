"""Plant plausible one-line bugs in rhmdiff, one at a time, and check that the tests that
concern the code catch each of them (a test that survives every mutant is not a test).

    python tests/mutation_check.py                 # every mutant (~20 minutes on 2 cores)
    python tests/mutation_check.py --only trainer  # the mutants whose name contains "trainer"
    python tests/mutation_check.py --list

For each mutant: the file is edited in place (the original is restored afterwards, also on
Ctrl-C), the listed tests run with ``pytest -x -q``, and the mutant is *caught* when they
fail. Prints one line per mutant and a JSON summary; exits 1 if any mutant survives. Not part
of the test suite (it reruns parts of it many times); run it after changing a module, with
the mutants of that module (add new ones to MUTANTS).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, file, original text, mutated text, pytest selection)
MUTANTS = [
    # the trainer: keys, resume, chunking, data parallelism, EMA, metrics
    ("trainer: diffusion noise repeats every 4 steps", "rhmdiff/train.py",
     "example_keys(jax.random.fold_in(key, step), per_device, first)",
     "example_keys(jax.random.fold_in(key, step % 4), per_device, first)",
     ["tests/test_train.py::test_trainer_follows_a_plain_training_loop_step_by_step"]),
    ("trainer: the restored checkpoint is ignored (training restarts from step 0)", "rhmdiff/train.py",
     "    if restored is None:\n", "    if restored is None or True:\n",
     ["tests/test_train.py::test_resume_continues_where_it_stopped_and_equals_the_uninterrupted_run"]),
    ("trainer: chunks see the steps shifted by one", "rhmdiff/train.py",
     "return np.broadcast_to(np.arange(start, end, dtype=np.int32)",
     "return np.broadcast_to(np.arange(start + 1, end + 1, dtype=np.int32)",
     ["tests/test_train.py::test_trainer_follows_a_plain_training_loop_step_by_step"]),
    ("trainer: gradients not averaged over devices", "rhmdiff/train.py",
     "        grads = mean(grads)\n", "",
     ["tests/test_train.py::test_pmap_on_four_devices_matches_one_device"]),
    ("trainer: the initial state is placed on another mesh axis (the chunk compiles twice)", "rhmdiff/train.py",
     "device_pmap(initial_state, devices)", "jax.pmap(initial_state, devices=devices)",
     ["tests/test_train.py::test_resume_continues_where_it_stopped_and_equals_the_uninterrupted_run"]),
    ("trainer: every example of a device gets the same key", "rhmdiff/_util.py",
     "return jax.vmap(lambda i: jax.random.fold_in(key, i))(first + jnp.arange(num))",
     "return jax.vmap(lambda i: jax.random.fold_in(key, i))(first + 0 * jnp.arange(num))",
     ["tests/test_train.py::test_trainer_follows_a_plain_training_loop_step_by_step"]),
    ("trainer: EMA bias correction with the wrong power", "rhmdiff/train.py",
     "e / (1.0 - decay**step)", "e / (1.0 - decay ** (step + 1))",
     ["tests/test_train.py::test_ema_is_the_debiased_moving_average_and_stages_are_kept"]),
    ("trainer: metric lines after the restored step are kept on resume", "rhmdiff/metrics.py",
     'if row["step"] <= resume_step]', 'if row["step"] <= resume_step or True]',
     ["tests/test_train.py::test_resume_continues_where_it_stopped_and_equals_the_uninterrupted_run"]),
    ("trainer: a preemption saves no checkpoint", "rhmdiff/train.py",
     "            if (schedule.checkpoint(step) or preempted) and not interrupted:",
     "            if schedule.checkpoint(step) and not interrupted:",
     ["tests/test_launch.py", "-k", "killed_run_resumes and 15"]),
    # the D3PM objective and bound
    ("d3pm: the L_1 term -log p(x_0 | x_1) is left out", "rhmdiff/diffusion/d3pm.py",
     "return jnp.where(expand_right(t, x0.ndim) == 1, nll, kl)", "return jnp.where(expand_right(t, x0.ndim) == 1, 0.0, kl)",
     ["tests/test_d3pm.py::test_objectives_against_explicit_transition_matrices"]),
    ("d3pm: the bound multiplies the mean term by T - 1", "rhmdiff/diffusion/d3pm.py",
     "vb = schedule.T * term + prior_kl", "vb = (schedule.T - 1) * term + prior_kl",
     ["tests/test_d3pm.py::test_objectives_against_explicit_transition_matrices"]),
    ("d3pm: prior KL at step T - 1", "rhmdiff/diffusion/d3pm.py",
     "q = q_probs(schedule, x0, schedule.T, v)", "q = q_probs(schedule, x0, schedule.T - 1, v)",
     ["tests/test_d3pm.py::test_objectives_against_explicit_transition_matrices"]),
    ("d3pm: training steps drawn from 0 .. T-1", "rhmdiff/diffusion/d3pm.py",
     "t = jax.random.randint(k_t, x0.shape[:-1], 1, schedule.T + 1)",
     "t = jax.random.randint(k_t, x0.shape[:-1], 0, schedule.T)",
     ["tests/test_d3pm.py", "-k", "every_step_from_1_to_T"]),
    ("d3pm: posterior uses alpha_bar_t for alpha_bar_{t-1}", "rhmdiff/diffusion/d3pm.py",
     "ab_prev = expand_right(schedule.alpha_bar(t - 1)", "ab_prev = expand_right(schedule.alpha_bar(t)",
     ["tests/test_d3pm.py::test_posterior_is_bayes_rule"]),
    ("d3pm: hybrid ignores its coefficient", "rhmdiff/diffusion/d3pm.py",
     "term + hybrid_coeff * ce if objective", "term + ce if objective",
     ["tests/test_d3pm.py::test_objectives_against_explicit_transition_matrices"]),
    # samplers
    ("d3pm sampler: returns the x_0 draw instead of x_{t-1}", "rhmdiff/diffusion/d3pm.py",
     "logits = q_posterior_logits(schedule, fn(split[:, 0], x, tt), x, tt, v)",
     "logits = jnp.log(fn(split[:, 0], x, tt))",
     ["tests/test_d3pm.py::test_reverse_step_draws_from_the_posterior_mixture"]),
    ("oracle sampler: factorized marginals in the exact sampler", "rhmdiff/diffusion/d3pm.py",
     "    return jax.nn.one_hot(bp.posterior_sample_each(keys, g, ev), g.v)",
     "    return bp.marginals(g, ev)",
     ["tests/test_d3pm.py::test_exact_oracle_sampler_draws_every_sequence_equally_often"]),
    ("md4 sampler: reveal probability not normalized by 1 - alpha_t", "rhmdiff/diffusion/md4.py",
     "p_reveal = expand_right((alpha_s - alpha_t) / (1.0 - alpha_t), x_t.ndim)",
     "p_reveal = expand_right(alpha_s - alpha_t, x_t.ndim)",
     ["tests/test_md4.py", "-k", "expected_fraction"]),
    ("md4 ELBO: prior term at t = 0", "rhmdiff/diffusion/md4.py",
     "schedule.alpha(1.0) * np.log(vocab_size)", "schedule.alpha(0.0) * np.log(vocab_size)",
     ["tests/test_md4.py", "-k", "continuous_elbo"]),
    ("md4 ELBO: weight without the 1 - alpha denominator", "rhmdiff/diffusion/md4.py",
     "return -self.dalpha(t) / (1.0 - self.alpha(t))", "return -self.dalpha(t)",
     ["tests/test_md4.py", "-k", "continuous_elbo"]),
    ("gaussian: variance ends swapped (beta vs beta~)", "rhmdiff/diffusion/gaussian.py",
     "log_var = frac * _at(jnp.log(schedule.betas), t, x_t.ndim) + (1 - frac) * _at(",
     "log_var = (1 - frac) * _at(jnp.log(schedule.betas), t, x_t.ndim) + frac * _at(",
     ["tests/test_gaussian.py", "-k", "beta_tilde"]),
    # the RHM draws
    ("rhm: the last production is never chosen", "rhmdiff/rhm.py",
     "choices = jax.random.randint(k_choice, (num, g.num_nodes), 0, g.m, dtype=jnp.int32)",
     "choices = jax.random.randint(k_choice, (num, g.num_nodes), 0, max(g.m - 1, 1), dtype=jnp.int32)",
     ["tests/test_rhm.py", "-k", "uniform_over_language"]),
    ("rhm: sample_distinct in sorted order", "rhmdiff/rhm.py",
     "idx = rng.choice(n_seq, size=num, replace=False, shuffle=True)",
     "idx = np.sort(rng.choice(n_seq, size=num, replace=False, shuffle=True))",
     ["tests/test_rhm.py", "-k", "random_order"]),
    ("rhm: dedup path sorted", "rhmdiff/rhm.py",
     "        rows = rows[np.sort(first)]\n", "        rows = rows[np.sort(first)]\n        rows = rows[np.lexsort(rows.T[::-1])]\n",
     ["tests/test_rhm.py", "-k", "random_order"]),
    ("rhm: the reset may redraw the current production", "rhmdiff/rhm.py",
     "jax.random.randint(k_top, prod.shape, 1, g.m, dtype=jnp.int32)) % g.m",
     "jax.random.randint(k_top, prod.shape, 0, g.m, dtype=jnp.int32)) % g.m",
     ["tests/test_rhm.py", "-k", "other_productions"]),
    # the rhm task's metrics
    ("rhm task: novel-valid counts the copies", "rhmdiff/evaluate.py",
     '"novel_valid_fraction": float((valid & ~copies).mean())', '"novel_valid_fraction": float(valid.mean())',
     ["tests/test_main.py::test_rhm_task_trains_generates_and_resumes"]),
    ("rhm task: copies compare the first token only", "rhmdiff/evaluate.py",
     "return np.isin(as_bytes(generated), as_bytes(train_x))",
     "return np.isin(generated[:, 0], train_x[:, 0])",
     ["tests/test_train.py::test_copies_of_against_brute_force"]),
    ("rhm task: tuple accuracy is the per-sequence one", "rhmdiff/rhm.py",
     "return jnp.stack([jnp.mean(h >= 0) for h in _decode(g, tokens)]).astype(jnp.float32)",
     "return jnp.stack([jnp.mean(jnp.all(h >= 0, axis=1)) for h in _decode(g, tokens)]).astype(jnp.float32)",
     ["tests/test_rhm.py", "-k", "tuple_accuracy"]),
    ("rhm task: validation noise drawn anew at every evaluation", "rhmdiff/tasks/rhm.py",
     "np.asarray(val_x), t_all, keys, shared=params,",
     "np.asarray(val_x), t_all, np.asarray(example_keys(jax.random.PRNGKey(time.perf_counter_ns() % 99991), n)), "
     "shared=params,",
     ["tests/test_train.py::test_validation_bound_has_stratified_steps_and_fixed_noise"]),
    ("rhm task: validation steps not stratified", "rhmdiff/tasks/rhm.py",
     "t_all = 1 + (schedule.T * (2 * np.arange(n) + 1)) // (2 * n)", "t_all = 1 + (schedule.T * np.arange(n)) // n",
     ["tests/test_train.py::test_validation_bound_has_stratified_steps_and_fixed_noise"]),
    # the reference network
    ("reference U-Net: transposed convolutions divided by sqrt(2C)", "rhmdiff/models/unet.py",
     'dense(s * C, s * 2 * C, f"decoder_{k}")', 'dense(s * C, 2 * C, f"decoder_{k}")',
     ["tests/test_unet.py", "-k", "numpy"]),
]


def run(mutant) -> tuple[bool, float]:
    name, path, old, new, selection = mutant
    full = os.path.join(ROOT, path)
    original = open(full).read()
    if original.count(old) != 1:
        raise SystemExit(f"mutant {name!r}: the original text occurs {original.count(old)} times in {path}")
    t0 = time.time()
    try:
        with open(full, "w") as f:
            f.write(original.replace(old, new))
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *selection],
                              cwd=ROOT, capture_output=True, text=True)
    finally:
        with open(full, "w") as f:
            f.write(original)
    return proc.returncode != 0, time.time() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the mutants whose name contains this text")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.only in m[0]]
    if args.list:
        for m in chosen:
            print(f"{m[0]}  ->  {' '.join(m[4])}")
        return 0
    results = []
    for mutant in chosen:
        caught, seconds = run(mutant)
        results.append({"mutant": mutant[0], "caught": caught, "tests": " ".join(mutant[4]), "seconds": round(seconds)})
        print(f"{'caught  ' if caught else 'SURVIVED'} {mutant[0]} ({seconds:.0f} s)", flush=True)
    survived = [r["mutant"] for r in results if not r["caught"]]
    print(json.dumps({"mutants": len(results), "caught": len(results) - len(survived), "survived": survived}, indent=1))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
