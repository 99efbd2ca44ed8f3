"""The trainer: data parallelism, early stopping, exact resume, learning; the RHM data streams."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from rhmdiff import evaluate, rhm, train
from rhmdiff import checkpoints
from rhmdiff.metrics import read_metrics
from rhmdiff.data import rhm_data
from rhmdiff.tasks import rhm as rhm_task


def tiny_config(**train_overrides):
    c = load_config("rhm_L3")
    c.rhm.update(v=4, m=2, s=2, L=3)  # 512 sequences of 8 tokens
    c.data.update(train_size=64, val_size=32, test_size=16)
    c.model.width = 16
    c.diffusion.update(T=20, hybrid_coeff=1.0)
    c.train.update(lr=0.1, num_steps=40, eval_every=10, steps_per_call=5, batch_size=8, patience=100)
    c.train.update(**train_overrides)
    c.eval.update(num_generated=16, batch_size=16)
    return c


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def trajectory(workdir):
    with open(workdir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in row.items() if k != "train/steps_per_second"} for row in rows]


def test_pmap_on_four_devices_matches_one_device(tmp_path):
    """Equal global batch: the loss trajectory and the parameters do not depend on the
    number of devices (example keys come from the global example index)."""
    assert jax.local_device_count() >= 4
    c = tiny_config()
    runs = {}
    for n in (1, 4):
        out = train.fit(c, str(tmp_path / f"d{n}"), devices=jax.local_devices()[:n],
                        **rhm_task.setup(c).fit_kwargs)
        runs[n] = (out, trajectory(tmp_path / f"d{n}"))
    (out1, traj1), (out4, traj4) = runs[1], runs[4]
    assert len(traj1) == len(traj4) == 4
    for r1, r4 in zip(traj1, traj4):
        assert r1.keys() == r4.keys()
        for k in r1:
            np.testing.assert_allclose(r1[k], r4[k], rtol=2e-4, err_msg=k)
    for a, b in zip(leaves(out1.params), leaves(out4.params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_batch_size_must_divide_over_devices(tmp_path):
    c = tiny_config(batch_size=6)
    with pytest.raises(ValueError, match="batch_size"):
        train.fit(c, str(tmp_path), devices=jax.local_devices()[:4], **rhm_task.setup(c).fit_kwargs)


def test_early_stopping_keeps_the_best_parameters(tmp_path):
    """With a scripted validation loss the run stops ``patience`` evaluations after the
    minimum and returns the parameters evaluated there."""
    c = tiny_config(patience=2, num_steps=100)
    kwargs = rhm_task.setup(c).fit_kwargs
    script, seen = [5.0, 3.0, 4.0, 2.5, 2.6, 2.7, 1.0], []

    def validate(params):
        seen.append(jax.tree_util.tree_map(np.array, params))
        return {"val_loss": script[len(seen) - 1]}

    out = train.fit(c, str(tmp_path), **dict(kwargs, validate=validate))
    assert out.stopped_early and out.done
    assert (out.best_step, out.steps, out.best_val_loss) == (40, 60, 2.5)
    assert len(seen) == 6
    for a, b in zip(leaves(out.params), leaves(seen[3])):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(leaves(out.params), leaves(seen[-1])))


def recording(batches):
    """``batches`` that records the first step of every request (where training resumed)."""
    asked = []

    def wrapped(start, num, rows):
        asked.append(start)
        return batches(start, num, rows)

    return wrapped, asked


def test_resume_continues_where_it_stopped_and_equals_the_uninterrupted_run(tmp_path):
    """Interrupted after an evaluation (step 20) and between checkpoints (step 25): the
    reruns ask for the data of step 20 first (not step 0), keep the metric lines written
    up to the checkpoint, drop the ones after it (step 25, logged but not checkpointed),
    and end with the parameters and metrics of one uninterrupted run. The training chunk is
    traced (and compiled) once per run, fresh or resumed: the state it first receives is
    placed like its own outputs."""
    c = tiny_config(log_every=5)
    kwargs = rhm_task.setup(c).fit_kwargs
    full = train.fit(c, str(tmp_path / "full"), **kwargs)
    traces = []

    def loss_fn(*args):
        traces.append(1)
        return kwargs["loss_fn"](*args)

    assert train.fit(c, str(tmp_path / "cut"), stop_at=20, **dict(kwargs, loss_fn=loss_fn)).done is False
    assert len(traces) == 1  # 4 chunks of 5 steps
    before = (tmp_path / "cut" / "metrics.jsonl").read_text()
    batches, asked = recording(kwargs["batches"])
    assert train.fit(c, str(tmp_path / "cut"), stop_at=25, **dict(kwargs, batches=batches)).steps == 25
    after = (tmp_path / "cut" / "metrics.jsonl").read_text()
    assert asked[0] == 20 and after.startswith(before) and '"step": 25' in after[len(before):]
    batches, asked = recording(kwargs["batches"])
    traces.clear()
    resumed = train.fit(c, str(tmp_path / "cut"), **dict(kwargs, batches=batches, loss_fn=loss_fn))
    assert asked[0] == 20  # the step-25 interruption saved nothing: back to the checkpoint of step 20
    assert len(traces) == 1  # 4 chunks of 5 steps after the restore
    assert resumed.steps == full.steps == 40
    for a, b in zip(leaves(full.params), leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    assert trajectory(tmp_path / "cut") == trajectory(tmp_path / "full")
    batches, asked = recording(kwargs["batches"])
    again = train.fit(c, str(tmp_path / "cut"), **dict(kwargs, batches=batches))  # finished: nothing left
    assert again.steps == 40 and again.best_step == full.best_step and asked == []


def test_trainer_follows_a_plain_training_loop_step_by_step(tmp_path):
    """The trainer (4 devices, steps in lax.scan chunks of 3, a checkpoint and a restart in
    the middle) against a loop written here: no pmap, no scan, no checkpoints -- optax SGD
    with momentum at lr x width on the whole batch of each step, each example's key
    fold_in(fold_in(fold_in(seed, 1), step), example). The objective of every step (logged
    every step) and the final parameters agree."""
    import optax
    c = tiny_config(num_steps=12, eval_every=6, steps_per_call=3, log_every=1, batch_size=8, lr=0.2)
    s = rhm_task.setup(c)
    kwargs = s.fit_kwargs
    assert train.fit(c, str(tmp_path), stop_at=6, **kwargs).done is False  # an interruption after step 6
    out = train.fit(c, str(tmp_path), **kwargs)
    logged = {r["step"]: r["train/objective"] for r in read_metrics(tmp_path / "metrics.jsonl")
              if "train/objective" in r}

    params = kwargs["init_params"]()
    tx = optax.sgd(0.2 * c.model.width, momentum=0.9)
    opt_state = tx.init(params)
    key = jax.random.fold_in(jax.random.PRNGKey(c.seed), 1)
    value_and_grad = jax.jit(jax.value_and_grad(kwargs["loss_fn"], has_aux=True))  # one step, as written
    for step in range(12):
        x = kwargs["batches"](step, 1, slice(None))[0]
        keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(key, step), i) for i in range(len(x))])
        (objective, _), grads = value_and_grad(params, x, keys)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        assert logged[step + 1] == pytest.approx(float(objective), rel=1e-4), step
    last = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
    if out.best_step == 12:
        for a, b in zip(leaves(out.params), leaves(last)):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    import orbax.checkpoint as ocp
    ckpt = checkpoints.Checkpoints(tmp_path)
    final = ckpt.latest.restore(12, args=ocp.args.Composite(state=ocp.args.PyTreeRestore())).state["params"]
    ckpt.close()
    for a, b in zip(leaves(final), leaves(last)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 3e-3)])
def test_loss_decreases_on_a_tiny_problem(tmp_path, optimizer, lr):
    c = tiny_config(optimizer=optimizer, lr=lr, num_steps=300, eval_every=100, steps_per_call=50)
    kwargs = rhm_task.setup(c).fit_kwargs
    initial_val = kwargs["validate"](kwargs["init_params"]())["val_loss"]
    out = train.fit(c, str(tmp_path), **kwargs)
    rows = trajectory(tmp_path)
    assert rows[-1]["train/objective"] < 0.8 * rows[0]["train/objective"]
    assert out.best_val_loss < 0.7 * initial_val
    assert rows[-1]["train/skipped_updates"] == 0


def test_non_finite_updates_are_skipped_and_counted():
    tx = train.make_optimizer("sgd", 0.1, 0.9)
    params = {"w": np.ones(3, np.float32)}
    state = tx.init(params)
    _, state = tx.update({"w": np.array([1.0, np.nan, 0.0], np.float32)}, state, params)
    updates, state = tx.update({"w": np.ones(3, np.float32)}, state, params)
    assert train.skipped_updates(state) == 1
    np.testing.assert_allclose(updates["w"], -0.1)  # momentum buffer untouched by the bad step


def test_offline_batches_are_epochs_of_permutations():
    key = jax.random.PRNGKey(3)
    train_x = np.arange(40, dtype=np.int32).reshape(20, 2)
    b = rhm_data.offline_batches(key, train_x, 6, 0, 9)  # 3 batches per epoch, 2 rows dropped
    assert b.shape == (9, 6, 2)
    for epoch in range(3):
        rows = b[3 * epoch:3 * epoch + 3].reshape(-1, 2)
        assert len({tuple(r) for r in rows}) == 18 and set(rows[:, 0] // 2) <= set(range(20))
    assert not np.array_equal(b[:3], b[3:6])  # a new order every epoch
    np.testing.assert_array_equal(rhm_data.offline_batches(key, train_x, 6, 4, 3), b[4:7])
    with pytest.raises(ValueError, match="batch_size"):
        rhm_data.offline_batches(key, train_x, 21, 0, 1)


def test_online_batches_are_fresh_valid_samples():
    g = rhm.make_grammar(jax.random.PRNGKey(0), 4, 2, 2, 2)
    key = jax.random.PRNGKey(1)
    b = rhm_data.online_batches(key, g, 8, 5, 3)
    assert b.shape == (3, 8, 4)
    assert bool(np.all(rhm.is_valid(g, b.reshape(-1, 4))))
    np.testing.assert_array_equal(rhm_data.online_batches(key, g, 8, 6, 1)[0], b[1])
    assert not np.array_equal(b[0], b[1])


def test_copies_of_against_brute_force():
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 3, (30, 4)).astype(np.int32)
    gen = np.concatenate([train_x[:5], rng.integers(0, 3, (40, 4))]).astype(np.int32)
    expected = [any(np.array_equal(x, y) for y in train_x) for x in gen]
    np.testing.assert_array_equal(evaluate.copies_of(gen, train_x), expected)


def _quadratic_run(tmp_path, w0: float = 0.0, **train_overrides):
    """fit on loss(w) = mean_batch (w - x)^2 with x = step-dependent constants, from w = w0: SGD
    steps and the EMA can be replayed in numpy. Returns (validated params per evaluation, fit output)."""
    c = tiny_config(optimizer="sgd", lr=0.1, momentum=0.0, num_steps=6, eval_every=3, steps_per_call=2,
                    batch_size=4)
    c.train.update(**train_overrides)
    seen = []

    def validate(params):
        seen.append(float(params["w"]))
        return {"val_loss": float(params["w"]) ** 2}

    loss_fn = lambda p, x, keys: (((p["w"] - x) ** 2).mean(), {})
    batches = lambda start, num, rows: np.broadcast_to(
        np.arange(start, start + num, dtype=np.float32)[:, None], (num, 4))[:, rows]
    out = train.fit(c, str(tmp_path), init_params=lambda: {"w": jnp.full((), w0, jnp.float32)}, loss_fn=loss_fn,
                    batches=batches,
                    validate=validate, devices=jax.local_devices()[:2])
    return seen, out


@pytest.mark.parametrize("debias", [True, False])
def test_ema_is_the_debiased_moving_average_and_stages_are_kept(tmp_path, debias):
    """Debiased: the average starts at zero and is divided by 1 - decay^step. Not debiased (MD4,
    improved-diffusion): it starts at the initial weights (w0 != 0 tells the two apart)."""
    decay, w0 = 0.5, 3.0
    seen, out = _quadratic_run(tmp_path, w0=w0, ema_decay=decay, ema_debias=debias, keep_steps=(2, 5))
    w, ema, expected = w0, 0.0 if debias else w0, []
    for step in range(6):
        w -= 0.1 * 2 * (w - step)  # gradient of (w - x)^2 at x = step
        ema = decay * ema + (1 - decay) * w
        if step + 1 in (3, 6):
            expected.append(ema / (1 - decay ** (step + 1)) if debias else ema)
    np.testing.assert_allclose(seen, expected, rtol=1e-5)
    ckpt = checkpoints.Checkpoints(str(tmp_path))
    assert ckpt.stage_steps() == [2, 5]
    ckpt.close()


def test_learning_rate_schedules_and_adamw_clipping(tmp_path):
    cosine = train.learning_rate(1.0, "cosine", warmup_steps=10, num_steps=110)
    assert float(cosine(0)) == 0.0 and float(cosine(5)) == pytest.approx(0.5)
    assert float(cosine(10)) == pytest.approx(1.0) and float(cosine(60)) == pytest.approx(0.5, abs=1e-6)
    assert float(cosine(110)) == pytest.approx(0.0, abs=1e-6)
    warm = train.learning_rate(2.0, "constant", warmup_steps=4)
    assert [float(warm(s)) for s in (0, 2, 4, 100)] == pytest.approx([0.0, 1.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="lr_schedule"):
        train.learning_rate(1.0, "step")
    # clipping: a huge gradient moves SGD by at most lr * clip
    tx = train.make_optimizer("sgd", 0.1, 0.0, grad_clip=1.0)
    params = {"w": np.zeros(4, np.float32)}
    updates, _ = tx.update({"w": np.full(4, 1e6, np.float32)}, tx.init(params), params)
    assert np.linalg.norm(updates["w"]) == pytest.approx(0.1, rel=1e-5)
    # AdamW: decoupled weight decay shrinks the weights even with zero gradient
    tx = train.make_optimizer("adamw", 0.1, weight_decay=0.5)
    params = {"w": np.ones(2, np.float32)}
    updates, _ = tx.update({"w": np.zeros(2, np.float32)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5)
    seen, _ = _quadratic_run(tmp_path, optimizer="adamw", lr=0.05, lr_schedule="cosine", warmup_steps=2)
    assert 0 < seen[0] < seen[1]


def test_validation_bound_has_stratified_steps_and_fixed_noise():
    """The validation bound: sequence i at the step 1 + floor(T (2i + 1) / 2N) of a fixed
    shuffle (every part of [1, T] equally represented), its noise from a fixed key: the same
    value at every evaluation, equal to the per-sequence estimate T L_t + prior KL computed
    here in a plain loop (no devices, no batches)."""
    from rhmdiff.diffusion import d3pm
    c = tiny_config()
    c.data.val_size = 30
    s = rhm_task.setup(c)
    params = s.fit_kwargs["init_params"]()
    validate = s.fit_kwargs["validate"]
    first, second = validate(params), validate(params)
    assert first == second
    schedule, val_x, n = s.schedule, np.asarray(s.splits["val"][0]), 30
    k_val = jax.random.split(jax.random.PRNGKey(c.seed), 7)[3]
    k_perm, k_noise = jax.random.split(k_val)
    steps = np.asarray(jax.random.permutation(k_perm, 1 + (schedule.T * (2 * np.arange(n) + 1)) // (2 * n)))
    assert sorted(steps.tolist()) == sorted((1 + (20 * (2 * np.arange(30) + 1)) // 60).tolist())
    total = 0.0
    for i in range(n):
        key = jax.random.fold_in(jax.random.fold_in(k_noise, 0), i)
        x0, t = jnp.asarray(val_x[i:i + 1]), jnp.asarray(steps[i:i + 1])
        x_t = d3pm.q_sample(key, schedule, x0[0], t[0], 4)[None]
        terms = d3pm.vb_terms(schedule, x0, x_t, t, s.model.apply(params, x_t, t), 4)
        total += float(schedule.T * terms.mean() + d3pm.prior_kl(schedule, x0, 4).mean())
    assert first["val_loss"] == pytest.approx(total / n / np.log(2), rel=1e-5)


def test_evaluation_gives_the_same_numbers_on_one_and_four_devices(monkeypatch):
    """Generation, the variational bound (model and oracle) and the validation loss depend on
    the keys only, not on how the examples are spread: 4 devices x 3 vs 1 device x 5 per call."""
    assert jax.local_device_count() >= 4
    from jax.tree_util import Partial
    c = tiny_config()
    s = rhm_task.setup(c)
    g, schedule, model = s.g, s.schedule, s.model
    params = s.fit_kwargs["init_params"]()
    x0 = np.asarray(s.splits["val"][0])[:10]
    key = jax.random.PRNGKey(7)

    def evaluations(batch_size):
        return (evaluate.generate(key, model, params, schedule, 10, g.d, g.v, batch_size),
                evaluate.nll_bound(key, Partial(model.apply, params), schedule, x0, g.v, batch_size),
                evaluate.nll_bound(key, evaluate.oracle_logits_fn(g, schedule), schedule, x0, g.v, batch_size),
                s.fit_kwargs["validate"](params))

    four = evaluations(3)
    monkeypatch.setattr(jax, "local_device_count", lambda *a, **k: 1)
    one = evaluations(5)
    np.testing.assert_array_equal(four[0], one[0])
    np.testing.assert_allclose(four[1], one[1], rtol=1e-5)
    np.testing.assert_allclose(four[2], one[2], rtol=1e-5)
    assert four[3]["val_loss"] == pytest.approx(one[3]["val_loss"], rel=1e-5)


# ----------------------------------------------------------------------------- logs and accidents

def test_steps_per_second_leave_out_the_chunks_that_compile():
    """The first chunk of each length (its compilation) is not timed; a log of compiling chunks
    only has no rate."""
    sums = train.MetricSums()
    one = {"objective": np.ones(5, np.float32)}
    sums.add(one, 5, 9.0)  # compiles
    assert "train/steps_per_second" not in sums.means()
    sums.add(one, 5, 0.25)
    sums.add({"objective": np.ones(3, np.float32)}, 3, 7.0)  # another length: compiles
    sums.add(one, 5, 0.25)
    means = sums.means()
    assert means["train/steps_per_second"] == pytest.approx(10 / 0.5) and means["train/objective"] == 1.0


def test_progress_without_a_terminal_is_log_lines_with_rate_and_eta(tmp_path, caplog, monkeypatch):
    """stderr not a terminal (a batch job): the progress bar is log lines (count, rate, ETA, best
    validation loss), without carriage returns."""
    import logging as std_logging

    from rhmdiff import _util
    monkeypatch.setattr(_util, "PROGRESS_LOG_SECONDS", 0.0)
    c = tiny_config(num_steps=20)
    with caplog.at_level(std_logging.INFO):
        train.fit(c, str(tmp_path), **rhm_task.setup(c).fit_kwargs)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training: ")]
    assert any(line.startswith("training: 10/20 (50%) at ") and " step/s, " in line and ", ETA " in line
               for line in lines), lines
    assert lines[-1].startswith("training: 20/20 (100%)") and "best_val=" in lines[-1]
    assert not any("\r" in line for line in lines)


def test_log_lines_on_a_terminal_are_written_above_the_bar(monkeypatch):
    """On a terminal absl's log lines go through tqdm.write: each starts on a line of its own and
    the bar is drawn again below it."""
    import io

    from absl import logging as absl_logging

    from rhmdiff import _util

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    handler = absl_logging.get_absl_handler().python_handler
    monkeypatch.setattr("sys.stderr", screen)
    monkeypatch.setattr(handler, "stream", screen)
    bar = _util.progress(total=10, desc="training", unit="step", mininterval=0)
    bar.update(3)
    assert isinstance(handler.stream, _util._AboveBars)
    handler.stream.write("I1202 step 3: the log line\n")
    bar.update(3)
    bar.close()
    text = screen.getvalue()
    before, after = text.split("I1202 step 3: the log line\n")
    assert "3/10" in before and before.rstrip(" ").endswith("\r") and "6/10" in after


def test_ctrl_c_stops_training_with_a_checkpoint_and_twice_at_once(tmp_path):
    """A Ctrl-C: training stops at the end of the chunk with a checkpoint there (Preempted with
    SIGINT: the command exits 130). A second one raises KeyboardInterrupt at once (fit then waits
    for the saves in flight, as after any error: the next test)."""
    import os
    import signal

    c = tiny_config(num_steps=20)
    kwargs = rhm_task.setup(c).fit_kwargs
    batches = kwargs["batches"]

    def ctrl_c_at_step_10(start, num, rows):  # called in the batch thread; the main thread handles it
        if start == 10:
            os.kill(os.getpid(), signal.SIGINT)
        return batches(start, num, rows)

    with pytest.raises(train.Preempted, match="interrupted \\(Ctrl-C\\) at step 10; checkpoint saved") as stop:
        train.fit(c, str(tmp_path), **dict(kwargs, batches=ctrl_c_at_step_10))
    assert stop.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ckpt = checkpoints.Checkpoints(tmp_path)
    abstract = jax.eval_shape(train.initial_state_fn(kwargs["init_params"], train.optimizer_from_config(
        c.train, kwargs["lr_scale"])), 0)
    state, meta = ckpt.restore_latest(abstract)
    ckpt.close()
    assert int(state.step) == 10 and meta["devices"] == 4  # (all the fake CPU devices)
    with train._Preemption() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.reached() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_an_error_waits_for_the_checkpoints_being_written(tmp_path, monkeypatch):
    """Saves in the background (as on a GPU), then non-finite losses stop the run: the error
    propagates only once the checkpoint in flight is complete; it loads."""
    calls = []
    close = checkpoints.Checkpoints.close
    monkeypatch.setattr(checkpoints, "_on_cpu", lambda tree: False)
    monkeypatch.setattr(checkpoints.Checkpoints, "close", lambda self: calls.append(1) or close(self))
    c = tiny_config(lr=1e30, max_nonfinite=8, eval_every=5, steps_per_call=5)
    with pytest.raises(FloatingPointError, match="the last checkpoint is unchanged"):
        train.fit(c, str(tmp_path), **rhm_task.setup(c).fit_kwargs)
    assert calls
    ckpt = checkpoints.Checkpoints(tmp_path)
    assert ckpt.latest.all_steps() == [5] and not [p for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]
    ckpt.close()


def test_a_full_disk_while_a_checkpoint_is_written(tmp_path, monkeypatch):
    """The filesystem refuses the checkpoint of step 20 (a full disk): CheckpointError, one line;
    the checkpoint of step 10 stays the one that loads, and the rerun resumes from it."""
    import orbax.checkpoint as ocp
    save = ocp.CheckpointManager.save

    def full_disk(self, step, *args, **kwargs):
        if step == 20 and self.directory.name == "checkpoints":
            raise ValueError('RESOURCE_EXHAUSTED: Error writing local file "x": [OS error: No space left on device]')
        return save(self, step, *args, **kwargs)

    c = tiny_config()
    kwargs = rhm_task.setup(c).fit_kwargs
    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(checkpoints.CheckpointError) as error:
        train.fit(c, str(tmp_path), **kwargs)
    assert str(error.value).startswith(f"the latest checkpoint of step 20 in {tmp_path} could not be written "
                                       "(RESOURCE_EXHAUSTED") and "\n" not in str(error.value)
    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    batches, asked = recording(kwargs["batches"])
    assert train.fit(c, str(tmp_path), **dict(kwargs, batches=batches)).steps == 40 and asked[0] == 10


def test_a_resume_on_another_number_of_devices_warns(tmp_path, caplog):
    """Trained on 1 device, resumed on 4: one warning line naming both counts; every checkpoint
    and train_state.json record the count."""
    c = tiny_config(num_steps=20)
    kwargs = rhm_task.setup(c).fit_kwargs
    train.fit(c, str(tmp_path), devices=jax.local_devices()[:1], stop_at=10, **kwargs)
    train.fit(c, str(tmp_path), devices=jax.local_devices()[:4], **kwargs)
    warned = [r.getMessage() for r in caplog.records if "devices on" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("resuming a run trained on 1 devices on 4 devices")
    assert "float rounding" in warned[0] and "\n" not in warned[0]
    assert json.loads((tmp_path / "train_state.json").read_text())["devices"] == 4


def test_the_log_drops_the_libtpu_line_unless_a_tpu_is_asked_for(monkeypatch):
    """JAX's line about a TPU backend without libtpu, and orbax's INFO lines, are not logged;
    with JAX_PLATFORMS=tpu the libtpu line is."""
    import logging as std_logging

    from rhmdiff import _util

    def record(name, message, level=std_logging.INFO, path="x.py"):
        return std_logging.LogRecord(name, level, path, 1, message, (), None)

    libtpu = record("jax._src.xla_bridge", "Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so")
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    assert not _util._readable(libtpu)
    assert not _util._readable(record("orbax", "saved step 10", path="/site-packages/orbax/checkpoint/x.py"))
    assert _util._readable(record("absl", "step 10: train/objective 1.0"))
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    assert _util._readable(libtpu)
