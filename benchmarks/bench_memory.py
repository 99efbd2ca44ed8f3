"""Peak resident memory of a few training steps of an RHM preset, printed as JSON.

    python benchmarks/bench_memory.py [--config configs/rhm_L3.py:paper] [--steps 3] [--checkpoint [--checkpoint_dir DIR]]

The steps go through the trainer's own path (``rhmdiff.train``: the state created inside
``pmap`` on the device, the step donating it, so parameters, gradients and momentum are the
only large buffers) on one device. Printed: the parameter count, the bytes that a step needs
at the least (parameters, gradients and momentum, float32), the process's peak resident set
size after initialization and after the steps, and the milliseconds per step.

``--checkpoint``: after the initialization, the trainer's own save of the train state
(:meth:`rhmdiff.checkpoints.Checkpoints.save_latest` of :func:`rhmdiff.train.first_replica`,
waited for) and restore (:func:`rhmdiff.train.restore_latest`, with the state dropped first, as
in a resumed run) in ``--checkpoint_dir`` (default: a temporary directory, removed after), each
with its seconds and the resident set size before and at its peak (sampled every 5 ms), and
the checkpoint's size on disk; the steps then run on the restored state.
"""
import argparse
import json
import os
import tempfile
import time

import jax
import numpy as np
from measure import PeakRSS, TrainerStep, config, peak_rss_gb

from rhmdiff import from_config, train
from rhmdiff.checkpoints import Checkpoints
from rhmdiff.models import unet
from rhmdiff.tasks import rhm as rhm_task


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/rhm_L3.py:paper", help="configs/FILE.py[:preset] of task rhm")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--width", type=int, default=None, help="override model.width")
    parser.add_argument("--checkpoint", action="store_true", help="also time a save and a restore of the train state")
    parser.add_argument("--checkpoint_dir", default=None, help="where --checkpoint writes (default: a temporary directory)")
    args = parser.parse_args()
    path, _, preset = args.config.partition(":")
    c = config(path.rsplit("/", 1)[-1].removesuffix(".py"), preset or None)
    if args.width:
        c.model.width = args.width
    g = from_config.grammar(c)
    model = from_config.unet_model(c, g)
    schedule = from_config.d3pm_schedule(c)
    loss = rhm_task.rhm_loss_fn(model, schedule, g.v, c.diffusion.hybrid_coeff, c.diffusion.objective)
    tx = train.optimizer_from_config(c.train, unet.mup_lr_scale(c.model.width) if c.train.optimizer == "sgd" else 1.0)
    rss0 = peak_rss_gb()
    step = TrainerStep(loss, lambda: unet.init_params(model, jax.random.PRNGKey(1), g.d), tx, c.train.batch_size)
    jax.block_until_ready(step.state)
    rss_init = peak_rss_gb()
    saved = save_and_restore(step, args.checkpoint_dir) if args.checkpoint else {}
    x = np.asarray(jax.random.randint(jax.random.PRNGKey(2), (1, c.train.batch_size, g.d), 0, g.v), np.int32)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        metrics = jax.block_until_ready(step.run(x))
        times.append(time.perf_counter() - t0)
    moments = (1 if c.train.momentum else 0) if c.train.optimizer == "sgd" else 2  # momentum / Adam's two
    print(json.dumps({
        "config": args.config, "variant": c.model.variant, "width": c.model.width, "parameters": step.num_params,
        "batch": c.train.batch_size, "optimizer": c.train.optimizer,
        "needed_gb": round(4 * step.num_params * (2 + moments) / 1e9, 2),  # parameters, gradients, optimizer moments
        "peak_rss_gb_before": round(rss0, 2), "peak_rss_gb_after_init": round(rss_init, 2),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "first_step_s": round(times[0], 2), "ms_per_step": round(1e3 * float(np.median(times[1:] or times)), 1),
        "loss": float(np.asarray(metrics["objective"]).ravel()[-1]), **saved}))


def save_and_restore(step: TrainerStep, directory: str | None) -> dict:
    """The trainer's save and restore of ``step``'s state (module docstring); ``step.state``
    becomes the restored state."""
    with tempfile.TemporaryDirectory(dir=directory) as workdir:
        ckpt = Checkpoints(workdir)
        abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), step.state)
        with PeakRSS() as save:
            ckpt.save_latest(step.step, train.first_replica(step.state), {})
            ckpt.wait()
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(workdir) for f in names)
        step.state = None  # a resumed run starts without a state
        with PeakRSS() as restore:
            step.state, _ = train.restore_latest(ckpt, abstract, step.devices)
            jax.block_until_ready(step.state)
        ckpt.close()
    return {"checkpoint_gb": round(size / 1e9, 2), "save_s": round(save.seconds, 2),
            "save_rss_gb_before": round(save.start_gb, 2), "save_peak_rss_gb": round(save.peak_gb, 2),
            "restore_s": round(restore.seconds, 2), "restore_rss_gb_before": round(restore.start_gb, 2),
            "restore_peak_rss_gb": round(restore.peak_gb, 2)}


if __name__ == "__main__":
    main()
