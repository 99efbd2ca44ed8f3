"""Plant plausible one-line bugs in rhmdiff, one at a time, and check that the tests that
concern the code catch each of them (a test that survives every mutant is not a test).

    python tests/mutation_check.py                 # every mutant (~35 minutes on 2 cores)
    python tests/mutation_check.py --only trainer  # the mutants whose name contains "trainer"
    python tests/mutation_check.py --only "i28 "   # the second round's (issue 28), ~12 minutes
    python tests/mutation_check.py --list

The mutants are planted in a copy of the working tree (a temporary directory, made once per
invocation, with the checkout's ``.git`` linked for the tests that ask git): the checkout itself
is never edited, so a commit made meanwhile, a second invocation or a killed one cannot pick up
a planted bug. For each mutant: the file is edited in the copy (and restored there afterwards),
the listed tests run there with ``pytest -x -q`` (``rhmdiff`` imported from the copy), and the
mutant is *caught* when they fail. Prints one line per mutant and a JSON summary; exits 1 if any
mutant survives. Not part of the test suite (it reruns parts of it many times); run it after
changing a module, with the mutants of that module (add new ones to MUTANTS).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
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
    # ---- issue 28, second round: each mutant names the test that catches it ----
    # theory.py
    ("i28 theory: P_l with f = m / v (s = 3 shows it)", "rhmdiff/theory.py",
     "return v * m ** (level + 1) / (1.0 - m / v ** (s - 1))", "return v * m ** (level + 1) / (1.0 - m / v)",
     ["tests/test_theory_exact.py::test_sample_complexity_and_sampling_noise_closed_forms_at_s3"]),
    ("i28 theory: <p p'> of Eq. 16 with v for v^(s-1)", "rhmdiff/theory.py",
     "cross = (v ** (s - 1) - 1) / (v * (v**s - 1))", "cross = (v - 1) / (v * (v**s - 1))",
     ["tests/test_theory_exact.py::test_rule_moments_and_level_factor_are_exact_averages_over_all_rule_sets"]),
    ("i28 theory: <p^2> of Eq. 15 with v^s for v^(s-1) in the m term", "rhmdiff/theory.py",
     "+ m * (v ** (s - 1) - 1)) / (m * v * (v**s - 1))", "+ m * (v**s - 1)) / (m * v * (v**s - 1))",
     ["tests/test_theory_exact.py::test_rule_moments_and_level_factor_are_exact_averages_over_all_rule_sets"]),
    ("i28 theory: marginal spread's hypergeometric factor copied from the one-symbol draw (v^s - m)", "rhmdiff/theory.py",
     "c = (1.0 - 1.0 / v) * (v**s - v * m) / (m * (v**s - 1))", "c = (1.0 - 1.0 / v) * (v**s - m) / (m * (v**s - 1))",
     ["tests/test_theory_exact.py::test_marginal_spread_below_the_root_is_the_exact_relative_variance"]),
    ("i28 theory: marginal spread recursion divides by v", "rhmdiff/theory.py",
     "spread = c + spread / m", "spread = c + spread / v",
     ["tests/test_theory_exact.py::test_marginal_spread_recursion_closed_form"]),
    ("i28 theory: sibling entry variance with (1 - 1/v) copied from the marginal spread", "rhmdiff/theory.py",
     "siblings = (1.0 - v**-2) *", "siblings = (1.0 - 1.0 / v) *",
     ["tests/test_theory_exact.py::test_sibling_covariance_entry_variance_is_exact"]),
    ("i28 theory: token-tuple correlation with f = m / v", "rhmdiff/theory.py",
     "    f = m / v ** (s - 1)\n    return ((1.0 - f) / (v**3 * m**4)", "    f = m / v\n    return ((1.0 - f) / (v**3 * m**4)",
     ["tests/test_theory_exact.py::test_token_tuple_correlation_and_its_large_v_limit"]),
    ("i28 theory: correlation curve drops the last pair at each distance", "rhmdiff/theory.py",
     "        i = np.arange(d - t)\n", "        i = np.arange(max(d - t - 1, 1))\n",
     ["tests/test_theory_exact.py::test_token_correlation_curve_is_the_mean_over_pairs_by_a_plain_loop"]),
    # bp.py
    ("i28 bp: evidence of likelihood 0 still draws a sequence (the check dropped)", "rhmdiff/bp.py",
     "return jnp.where(possible, h, -1).astype(jnp.int32)", "return h.astype(jnp.int32)",
     ["tests/test_bp_reference.py::test_impossible_evidence_gives_nan_marginals_minus_inf_likelihood_and_no_draw"]),
    ("i28 bp: posterior_sample_each draws the whole batch from its first key", "rhmdiff/bp.py",
     "return jax.vmap(lambda k, e: _posterior_sample(k, g, e))(keys, _check_evidence(g, log_ev))",
     "return posterior_sample(keys[0], g, log_ev)",
     ["tests/test_bp_reference.py::test_posterior_sample_each_draws_each_sequence_from_its_own_key"]),
    ("i28 bp: the productions of the top level drawn with the root's key", "rhmdiff/bp.py",
     "j = jax.random.categorical(keys[l - 1], logits, axis=-1)", "j = jax.random.categorical(keys[l], logits, axis=-1)",
     ["tests/test_bp_reference.py::test_posterior_sample_each_draws_each_sequence_from_its_own_key"]),
    ("i28 bp: mask id 0 accepted although it is a symbol", "rhmdiff/bp.py",
     "    if 0 <= mask_id < v:\n", "    if 0 < mask_id < v:\n",
     ["tests/test_bp_reference.py::test_evidence_builders_on_batches_of_batches_and_their_refusals"]),
    ("i28 bp: alpha_bar expanded for one batch axis only", "rhmdiff/bp.py",
     "ab = expand_right(jnp.asarray(alpha_bar, jnp.float32), x_t.ndim)[..., None]",
     "ab = expand_right(jnp.asarray(alpha_bar, jnp.float32), 2)[..., None]",
     ["tests/test_bp_reference.py::test_evidence_builders_on_batches_of_batches_and_their_refusals"]),
    # rhm.py
    ("i28 rhm: sorted-code lookup answers with the unsorted production ids", "rhmdiff/rhm.py",
     "return jnp.where(sorted_codes[pos] == c, sorted_ids[pos], -1)", "return jnp.where(sorted_codes[pos] == c, ids[pos], -1)",
     ["tests/test_rhm_reference.py::test_decode_on_the_sorted_code_lookup_matches_the_definition"]),
    ("i28 rhm: chunk keys folded with the chunk's first row", "rhmdiff/rhm.py",
     "x, y = sample(jax.random.fold_in(key, i), g,", "x, y = sample(jax.random.fold_in(key, start), g,",
     ["tests/test_rhm_reference.py::test_sample_chunks_draw_each_chunk_from_its_own_key"]),
    ("i28 rhm: d = 2^16 tokens refused (>= for >)", "rhmdiff/rhm.py",
     "if L * np.log2(s) > np.log2(MAX_TOKENS):", "if L * np.log2(s) >= np.log2(MAX_TOKENS):",
     ["tests/test_rhm_reference.py::test_size_limits_at_their_boundaries"]),
    ("i28 rhm: a bool passes as a size (the check dropped)", "rhmdiff/rhm.py",
     "if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < low:",
     "if not isinstance(val, (int, np.integer)) or val < low:",
     ["tests/test_rhm_reference.py::test_size_limits_at_their_boundaries"]),
    ("i28 rhm: subtrees under the symbol 0 kept as if invalid (<= 0 for < 0)", "rhmdiff/rhm.py",
     "keep = jnp.repeat(latents < 0, g.s**level, axis=1)", "keep = jnp.repeat(latents <= 0, g.s**level, axis=1)",
     ["tests/test_rhm_reference.py::test_reset_at_level_2_redraws_valid_subtrees_and_keeps_invalid_ones"]),
    # diffusion/gaussian.py
    ("i28 gaussian: decoder NLL at t = 0 with the log variance as the log scale", "rhmdiff/diffusion/gaussian.py",
     "nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)", "nll = -discretized_gaussian_log_likelihood(x0, mean, log_var)",
     ["tests/test_gaussian_reference.py::test_vb_term_at_t0_is_the_decoder_nll_with_the_standard_deviation_of_the_log_variance"]),
    ("i28 gaussian: the t = 0 log variance clipped to beta_1 instead of beta~_1", "rhmdiff/diffusion/gaussian.py",
     "log_var = np.log(np.append(var[1], var[1:]))", "log_var = np.log(np.append(betas[1], var[1:]))",
     ["tests/test_gaussian_reference.py::test_schedule_arrays_from_unsorted_betas_and_the_one_step_schedule"]),
    ("i28 gaussian: the model sees the respaced step, not the original one", "rhmdiff/diffusion/gaussian.py",
     "    eps, v = model_fn(x_t, schedule.timesteps[t])\n    axes", "    eps, v = model_fn(x_t, t)\n    axes",
     ["tests/test_gaussian_reference.py::test_hybrid_objective_of_a_respaced_process_sees_the_original_steps"]),
    ("i28 gaussian: no noise at the last two steps (i > 1)", "rhmdiff/diffusion/gaussian.py",
     "jnp.where(i > 0, 1.0, 0.0)", "jnp.where(i > 1, 1.0, 0.0)",
     ["tests/test_gaussian_reference.py::test_ancestral_sampler_is_the_plain_loop"]),
    ("i28 gaussian: x_T drawn from the key of the first step", "rhmdiff/diffusion/gaussian.py",
     "jax.random.normal(jax.random.fold_in(k, schedule.T), shape)", "jax.random.normal(jax.random.fold_in(k, schedule.T - 1), shape)",
     ["tests/test_gaussian_reference.py::test_ancestral_sampler_is_the_plain_loop"]),
    ("i28 gaussian: posterior coefficient of x_t copied from the x_0 one (sqrt(alpha_bar_prev))", "rhmdiff/diffusion/gaussian.py",
     "posterior_coef_xt=f32((1.0 - alpha_bar_prev) * np.sqrt(1.0 - betas)",
     "posterior_coef_xt=f32((1.0 - alpha_bar_prev) * np.sqrt(alpha_bar_prev)",
     ["tests/test_gaussian_reference.py::test_reverse_step_at_an_interior_frac_with_and_without_clipping"]),
    # diffusion/md4.py
    ("i28 md4: top-p mask gathered in sorted order where a scatter was meant", "rhmdiff/diffusion/md4.py",
     "keep = jnp.zeros_like(keep_sorted).at[\n        tuple(jnp.indices(order.shape)[:-1]) + (order,)].set(keep_sorted)",
     "keep = jnp.take_along_axis(keep_sorted, order, -1)",
     ["tests/test_md4_reference.py::test_top_p_filter_on_unsorted_logits_against_a_loop"]),
    ("i28 md4: the reconstruction term asks the model at the sequence's t, not at t = 0", "rhmdiff/diffusion/md4.py",
     "recon = _masked_ce(logits_fn(x_r, t0), x0, x_r, mask_id)", "recon = _masked_ce(logits_fn(x_r, t), x0, x_r, mask_id)",
     ["tests/test_md4_reference.py::test_elbo_parts_from_the_inputs_the_model_was_given"]),
    ("i28 md4: the reconstruction masks drawn at t = 1 (the wrong end)", "rhmdiff/diffusion/md4.py",
     "q_sample(k, schedule, x, 0.0, mask_id))(split[:, 1], x0)", "q_sample(k, schedule, x, 1.0, mask_id))(split[:, 1], x0)",
     ["tests/test_md4_reference.py::test_elbo_parts_from_the_inputs_the_model_was_given"]),
    ("i28 md4: antithetic times spaced by 1/(B-1) (first and last coincide)", "rhmdiff/diffusion/md4.py",
     "t = jnp.mod(jax.random.uniform(k_t) + jnp.arange(b) / b, 1.0)", "t = jnp.mod(jax.random.uniform(k_t) + jnp.arange(b) / (b - 1), 1.0)",
     ["tests/test_md4_reference.py::test_loss_times_are_antithetic_and_its_bound_is_the_mean_of_the_parts"]),
    ("i28 md4: top_p = 0 accepted (the check's bound dropped)", "rhmdiff/diffusion/md4.py",
     "if top_p is not None and not 0 < top_p <= 1:", "if top_p is not None and not 0 <= top_p <= 1:",
     ["tests/test_md4_reference.py::test_loss_times_are_antithetic_and_its_bound_is_the_mean_of_the_parts"]),
    ("i28 md4: the poly schedule's derivative with the power of alpha", "rhmdiff/diffusion/md4.py",
     "return -self.power * t ** (self.power - 1.0)", "return -self.power * t**self.power",
     ["tests/test_md4_reference.py::test_schedules_and_sampling_grids_in_closed_form"]),
    # models/unet.py
    ("i28 unet: encoder fan-in without its filter size", "rhmdiff/models/unet.py",
     'a = patch_conv(MuDense(C, 1 / np.sqrt(s * C), name=f"encoder_{k}"), h, s)',
     'a = patch_conv(MuDense(C, 1 / np.sqrt(C), name=f"encoder_{k}"), h, s)',
     ["tests/test_unet_reference.py::test_unet_forward_and_preactivations_equal_a_numpy_implementation"]),
    ("i28 unet: read-out multiplier 1/sqrt(C) instead of muP's 1/C", "rhmdiff/models/unet.py",
     'logits = MuDense(self.v, 1 / C, use_bias=False, name="unembed")(h)',
     'logits = MuDense(self.v, 1 / np.sqrt(C), use_bias=False, name="unembed")(h)',
     ["tests/test_unet_reference.py::test_unet_forward_and_preactivations_equal_a_numpy_implementation"]),
    ("i28 unet: time frequencies spaced over dim instead of dim / 2", "rhmdiff/models/unet.py",
     "freqs = np.exp(-np.log(1000.0) * np.arange(dim // 2) / (dim // 2))",
     "freqs = np.exp(-np.log(1000.0) * np.arange(dim // 2) / dim)",
     ["tests/test_unet_reference.py::test_unet_forward_and_preactivations_equal_a_numpy_implementation"]),
    ("i28 unet: time projection scaled by the block's width, not by time_dim", "rhmdiff/models/unet.py",
     "return a + MuDense(a.shape[-1], 1 / np.sqrt(self.time_dim), name=name)(temb)[:, None, :]",
     "return a + MuDense(a.shape[-1], 1 / np.sqrt(a.shape[-1]), name=name)(temb)[:, None, :]",
     ["tests/test_unet_reference.py::test_unet_forward_and_preactivations_equal_a_numpy_implementation"]),
    # data/rhm_data.py
    ("i28 rhm_data: held-out draws replaced in a copy of the batch (the stream keeps them)", "rhmdiff/data/rhm_data.py",
     "    flat = x.reshape(-1, g.d)\n", "    flat = x.reshape(-1, g.d).copy()\n",
     ["tests/test_rhm_data_reference.py::test_online_stream_never_draws_held_out_sequences"]),
    ("i28 rhm_data: the replacement of attempt a drawn from the key of attempt a - 1", "rhmdiff/data/rhm_data.py",
     "fresh = np.asarray(_online(step_keys(keys, attempt), g, batch_size))",
     "fresh = np.asarray(_online(step_keys(keys, attempt - 1), g, batch_size))",
     ["tests/test_rhm_data_reference.py::test_online_stream_never_draws_held_out_sequences"]),
    ("i28 rhm_data: the replacement taken from the next row of the fresh batch", "rhmdiff/data/rhm_data.py",
     "flat[hits] = fresh[hits // batch_size, hits % batch_size]", "flat[hits] = fresh[hits // batch_size, (hits + 1) % batch_size]",
     ["tests/test_rhm_data_reference.py::test_online_stream_never_draws_held_out_sequences"]),
    ("i28 rhm_data: held-out membership asked the wrong way round (isin arguments swapped)", "rhmdiff/data/rhm_data.py",
     "hits = np.flatnonzero(np.isin(_as_rows(flat), held_out))", "hits = np.flatnonzero(np.isin(held_out, _as_rows(flat)))",
     ["tests/test_rhm_data_reference.py::test_online_stream_never_draws_held_out_sequences"]),
    # files.py
    ("i28 files: the temporary file created in the system's temporary directory", "rhmdiff/files.py",
     'fd, tmp = tempfile.mkstemp(dir=os.fspath(path.parent), prefix=f".{path.name}.", suffix=".tmp")',
     'fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp")',
     ["tests/test_files_atomic.py::test_the_temporary_file_lives_next_to_the_target_and_the_old_file_stays_until_the_rename"]),
    ("i28 files: the data not flushed to disk before the rename (fsync dropped)", "rhmdiff/files.py",
     "            os.fsync(f.fileno())\n", "",
     ["tests/test_files_atomic.py::test_the_temporary_file_lives_next_to_the_target_and_the_old_file_stays_until_the_rename"]),
    ("i28 files: Ctrl-C during a write leaves the temporary file (except Exception)", "rhmdiff/files.py",
     "    except BaseException:\n        with contextlib.suppress(FileNotFoundError):",
     "    except Exception:\n        with contextlib.suppress(FileNotFoundError):",
     ["tests/test_files_atomic.py::test_a_crash_during_the_write_leaves_the_old_file_and_no_temporary_one"]),
    ("i28 files: strict JSON leaves tuples alone (their NaN reaches the encoder)", "rhmdiff/files.py",
     "    if isinstance(obj, (list, tuple)):\n", "    if isinstance(obj, list):\n",
     ["tests/test_files_atomic.py::test_strict_json_npy_png_and_paths"]),
    # analysis/score_error.py
    ("i28 score_error: map floor with the KL's arguments swapped", "rhmdiff/analysis/score_error.py",
     "map_floor = jnp.stack([categorical_kl(exact[l], jnp.log(jnp.maximum(implied_exact[l], TINY))).mean(-1)",
     "map_floor = jnp.stack([categorical_kl(implied_exact[l], jnp.log(jnp.maximum(exact[l], TINY))).mean(-1)",
     ["tests/test_score_error_reference.py::test_every_error_against_brute_force_at_a_step_per_sequence"]),
    ("i28 score_error: the exact posterior from the noise level of step t - 1", "rhmdiff/analysis/score_error.py",
     "bp.uniform_noise_evidence(x_t, schedule.alpha_bar(tt), g.v)", "bp.uniform_noise_evidence(x_t, schedule.alpha_bar(tt - 1), g.v)",
     ["tests/test_score_error_reference.py::test_every_error_against_brute_force_at_a_step_per_sequence"]),
    ("i28 score_error: vb_excess against the model itself (the oracle term from the model's logits)", "rhmdiff/analysis/score_error.py",
     "    log_oracle = jnp.log(jnp.maximum(exact[0], TINY))\n", "    log_oracle = log_model\n",
     ["tests/test_score_error_reference.py::test_every_error_against_brute_force_at_a_step_per_sequence"]),
    ("i28 score_error: categorical KL without the 0 log 0 = 0 guard", "rhmdiff/analysis/score_error.py",
     "return jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.maximum(p, TINY)) - log_q), 0.0), -1)",
     "return jnp.sum(p * (jnp.log(jnp.maximum(p, TINY)) - log_q), -1)",
     ["tests/test_score_error_reference.py::test_helpers_log_grid_categorical_kl_and_summaries"]),
    ("i28 score_error: log grid starting at step 10", "rhmdiff/analysis/score_error.py",
     "np.round(np.logspace(0, np.log10(T), num))", "np.round(np.logspace(1, np.log10(T), num))",
     ["tests/test_score_error_reference.py::test_helpers_log_grid_categorical_kl_and_summaries"]),
    # analysis/onestep.py
    ("i28 onestep: every symbol counted as a possible first latent (m v first tuples)", "rhmdiff/analysis/onestep.py",
     "g.m * len(clustering.first_symbols(g, 1))", "g.m * g.v",
     ["tests/test_onestep_reference.py::test_separability_is_given_the_counted_correlations_and_the_possible_first_tuples"]),
    ("i28 onestep: the model predicts X_{s+2} instead of X_{s+1}", "rhmdiff/analysis/onestep.py",
     "_, dw = one_step_update(index, x[:, g.s], len(values), g.v, eta)",
     "_, dw = one_step_update(index, x[:, g.s + 1], len(values), g.v, eta)",
     ["tests/test_onestep_reference.py::test_separability_is_given_the_counted_correlations_and_the_possible_first_tuples"]),
    ("i28 onestep: the input tuple shifted by one token", "rhmdiff/analysis/onestep.py",
     "clustering.tuple_codes(x[:, :g.s], g.v)", "clustering.tuple_codes(x[:, 1:g.s + 1], g.v)",
     ["tests/test_onestep_reference.py::test_exact_correlations_separate_every_synonym_class"]),
    ("i28 onestep: the initial marginal normalized over the v classes, not the P examples", "rhmdiff/analysis/onestep.py",
     "prior = jnp.bincount(y, length=v) / len(y)", "prior = jnp.bincount(y, length=v) / v",
     ["tests/test_onestep_reference.py::test_one_step_update_with_classes_never_seen"]),
]


# Top-level entries of the checkout that the copy leaves out (virtualenvs, runs, data; .git is linked).
SKIP = {".git", ".venv", ".ci-venv", ".ci-venv-min", "runs", "data", "build", ".pytest_cache", ".ruff_cache"}


def snapshot(dest: str) -> str:
    """A copy of the working tree under ``dest``, its ``.git`` a link to the checkout's."""
    def ignore(directory, names):
        top = os.path.abspath(directory) == ROOT
        return {n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (top and n in SKIP)}

    copy = os.path.join(dest, os.path.basename(ROOT))
    shutil.copytree(ROOT, copy, ignore=ignore, symlinks=True)
    if os.path.exists(os.path.join(ROOT, ".git")):
        os.symlink(os.path.join(ROOT, ".git"), os.path.join(copy, ".git"))
    return copy


def run(mutant, root: str) -> tuple[bool, float]:
    """Plant ``mutant`` in the copy ``root``, run its tests there, restore the copy's file."""
    name, path, old, new, selection = mutant
    full = os.path.join(root, path)
    original = open(full).read()
    if original.count(old) != 1:
        raise SystemExit(f"mutant {name!r}: the original text occurs {original.count(old)} times in {path}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    t0 = time.time()
    try:
        with open(full, "w") as f:
            f.write(original.replace(old, new))
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *selection],
                              cwd=root, env=env, capture_output=True, text=True)
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
    with tempfile.TemporaryDirectory(prefix="rhmdiff-mutants-") as dest:
        root = snapshot(dest)
        for mutant in chosen:
            caught, seconds = run(mutant, root)
            results.append({"mutant": mutant[0], "caught": caught, "tests": " ".join(mutant[4]),
                            "seconds": round(seconds)})
            print(f"{'caught  ' if caught else 'SURVIVED'} {mutant[0]} ({seconds:.0f} s)", flush=True)
    survived = [r["mutant"] for r in results if not r["caught"]]
    print(json.dumps({"mutants": len(results), "caught": len(results) - len(survived), "survived": survived}, indent=1))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
