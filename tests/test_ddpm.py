"""Image data, the ddpm task end to end (tiny), and the layer-wise MMD per stage."""
import json
import os

import numpy as np
import pytest

from conftest import load_config, run_task
from rhmdiff.data import DataError, images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_npz_batches_and_image_folders_give_the_same_images(tmp_path):
    from PIL import Image
    x = images.demo_images(5, 8, seed=3)
    images.write_npz_batch(x[:3], str(tmp_path / "npz" / "a.npz"))
    images.write_npz_batch(x[3:], str(tmp_path / "npz" / "b.npz"))
    (tmp_path / "png").mkdir()
    for i, img in enumerate(x):
        Image.fromarray(img).save(tmp_path / "png" / f"{i:02d}.png")
    for name in ("npz", "png"):
        assert images.prepare_images(str(tmp_path / name), str(tmp_path / f"{name}.npy"), 8, progress=False) == 5
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), x)
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(DataError, match="expected 16x16"):
        images.prepare_images(str(tmp_path / "png"), str(tmp_path / "bad.npy"), 16, progress=False)
    with pytest.raises(DataError, match="images of 8x8 pixels"):
        images.prepare_images(str(tmp_path / "npz"), str(tmp_path / "bad.npy"), 16, progress=False)
    assert not list(tmp_path.glob("bad*"))
    with pytest.raises(DataError, match="data.path"):
        images.prepare_images(str(tmp_path / "nowhere"), str(tmp_path / "none.npy"), 8, progress=False)
    np.testing.assert_array_equal(images.to_uint8(images.to_unit_range(x)), x)


def test_images_in_a_bucket_give_the_images_of_the_local_folder(fake_gcs, tmp_path):
    """``data.path`` as a ``gs://`` URL (the bucket stand-in) of .npz batches or PNG files: read
    through epath into the local cache, the same images and the same cache file each time."""
    from PIL import Image
    x = images.demo_images(4, 8, seed=5)
    images.write_npz_batch(x, os.path.join(fake_gcs, "bucket", "npz", "train", "a.npz"))
    os.makedirs(os.path.join(fake_gcs, "bucket", "png", "sub"))
    for i, img in enumerate(x):
        Image.fromarray(img).save(os.path.join(fake_gcs, "bucket", "png", "sub", f"{i:02d}.png"))
    for name in ("npz", "png"):
        out = images.image_cache(str(tmp_path), f"gs://bucket/{name}", 8)
        assert out == images.image_cache(str(tmp_path), f"gs://bucket/{name}", 8)
        assert images.prepare_images(f"gs://bucket/{name}", out, 8, progress=False) == 4
        np.testing.assert_array_equal(np.load(out), x)
    with pytest.raises(DataError, match="^data.val_path: 'gs://bucket/none' does not exist"):
        images.source_files("gs://bucket/none", "data.val_path")


def test_image_batches_are_host_rows_of_a_resumable_epoch_loop(tmp_path):
    np.save(tmp_path / "x.npy", images.demo_images(20, 4, seed=0))
    data = images.ImageData(str(tmp_path / "x.npy"), seed=1)
    full = data.batches(6, 0, 7)  # 3 batches per epoch
    assert full.shape == (7, 6, 4, 4, 3) and full.dtype == np.uint8
    halves = [data.batches(6, 0, 7, slice(3 * p, 3 * p + 3)) for p in range(2)]
    assert {b.tobytes() for b in np.concatenate(halves, 1).reshape(-1, 48)} == {b.tobytes() for b in full.reshape(-1, 48)}
    np.testing.assert_array_equal(data.batches(6, 4, 2), full[4:6])


def test_ddpm_task_trains_keeps_stages_samples_and_mmd_per_stage(tmp_path):
    images.write_npz_batch(images.demo_images(96, 8, seed=0), str(tmp_path / "train" / "t.npz"))
    images.write_npz_batch(images.demo_images(32, 8, seed=1), str(tmp_path / "val" / "v.npz"))
    c = load_config("ddpm_tiny")
    c.data.update(path=str(tmp_path / "train"), val_path=str(tmp_path / "val"), image_size=8)
    c.model.update(channels=16, channel_mult=(1, 2), attention_resolutions=(4,))
    c.diffusion.T = 100
    c.train.update(batch_size=16, num_steps=6, eval_every=3, keep_steps=(2, 6))
    c.eval.update(val_images=16, batch_size=16, num_samples=4, sample_steps=5)
    workdir = tmp_path / "run"
    out = run_task(c, workdir)
    assert out["steps"] == 6 and out["stages"] == [2, 6] and out["num_params"] > 0
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and all(np.isfinite(r["val/val_loss"]) for r in rows)
    samples = np.load(workdir / "samples.npy")
    assert samples.shape == (4, 8, 8, 3) and samples.dtype == np.uint8
    assert (workdir / "samples.png").stat().st_size > 0
    mmd = load_config("ddpm_mmd", "tiny")
    mmd.analysis.update(run_dir=str(workdir), num_samples=8, sample_steps=3, batch_size=8)
    res = run_task(mmd, tmp_path / "mmd")
    assert [r["step"] for r in res["stages"]] == [2, 6]
    assert set(res["stages"][0]["mmd"]) == {"stem", "stage1", "stage2", "stage3", "stage4"}
    assert all(np.isfinite(v) for r in res["stages"] for v in r["mmd"].values())
    assert (tmp_path / "mmd" / "mmd.png").exists() and (tmp_path / "mmd" / "stage_000000006" / "samples.npy").exists()


def test_image_unet_paper_size_and_zero_output_at_init():
    import jax
    import jax.numpy as jnp

    from rhmdiff._util import num_params
    from rhmdiff.models.image_unet import ImageUNet
    params = jax.eval_shape(ImageUNet().init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1,)))
    assert 115e6 < num_params(params) < 125e6  # the paper's ~120M
    small = ImageUNet(channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,), num_heads=2)
    x = jnp.ones((2, 8, 8, 3))
    eps, v = jax.jit(small.apply)(jax.jit(small.init)(jax.random.PRNGKey(0), x, jnp.zeros((2,))), x, jnp.array([3, 7]))
    assert eps.shape == v.shape == (2, 8, 8, 3) and float(jnp.abs(eps).max()) == 0.0  # zero-initialized output
    with pytest.raises(ValueError, match="divisible"):
        jax.eval_shape(small.init, jax.random.PRNGKey(0), jnp.ones((1, 5, 5, 3)), jnp.zeros((1,)))
