"""Image data for the Improved-DDPM experiment (paper Sec. 5.2): ImageNet 64x64 from local files.

Sources (``data.path`` for training, ``data.val_path`` for the real images of the MMD; local
paths or ``gs://`` URLs, read through ``etils.epath``):

* the downsampled-ImageNet ``.npz`` batches (``train_data_batch_1.npz`` ... and
  ``val_data.npz`` of image-net.org's "Imagenet64x64": key ``data``, uint8 ``[N, 3*64*64]``
  in channel-major order), or
* a folder of image files (PNG/JPEG, searched recursively, each already ``size x size``).

:func:`prepare_images` converts a source once into a uint8 ``[N, H, W, 3]`` ``.npy`` file
(memory-mapped afterwards; written under a temporary name and renamed when complete) whose
name :func:`image_cache` derives from a hash of the source files' names, sizes and
modification times and of the image size (:mod:`rhmdiff.data.cache`), so new or changed
images, or another size, never reuse a stale conversion.
:class:`ImageData` serves training batches scaled to [-1, 1]: rows ``rows`` (this host's
share) of the global batch at each step, epochs in a seeded order that is a pure function
of the step (:class:`rhmdiff.data.epochs.EpochOrder`).
"""
from __future__ import annotations

import os

import numpy as np

from rhmdiff._util import progress as progress_bar
from rhmdiff.data import DataError, files_under, input_path
from rhmdiff.data.cache import content_key, file_signature
from rhmdiff.data.epochs import EpochOrder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
FORMAT_VERSION = 1


def _npz_rows(f) -> np.ndarray:
    """The ``data`` array of the ``.npz`` batch ``f`` (an ``epath.Path``)."""
    with f.open("rb") as fh, np.load(fh) as data:
        return data["data"]


def _npz_images(files, size, field):
    for f in files:
        x = _npz_rows(f)
        if x.ndim != 2 or x.shape[1] != 3 * size * size:
            side = int(round((x.shape[-1] / 3) ** 0.5)) if x.ndim == 2 else None
            raise DataError(f"{field}: {f} holds images of {side}x{side} pixels (rows of {x.shape[-1]} values), "
                            f"expected data.image_size = {size}")
        yield x.reshape(len(x), 3, size, size).transpose(0, 2, 3, 1)


def _folder_images(files, size, field):
    from PIL import Image  # pillow comes with matplotlib
    for f in files:
        with f.open("rb") as fh, Image.open(fh) as im:
            arr = np.asarray(im.convert("RGB"))
        if arr.shape[:2] != (size, size):
            raise DataError(f"{field}: {f} is an image of {arr.shape[1]}x{arr.shape[0]} pixels, expected "
                            f"{size}x{size} (data.image_size)")
        yield arr[None]


def source_files(path: str, field: str = "data.path") -> tuple[str, list]:
    """``("npz" or "images", files)`` of an image source (files as ``epath.Path``); DataError
    naming ``field`` if there is none."""
    hint = " (build the demo images with: python -m rhmdiff.data.images --out=data/demo_images)" if (
        "demo" in path) else ""
    root = input_path(path, field, hint)
    below = files_under(root) if root.is_dir() else []
    npz = [root] if root.name.endswith(".npz") else [f for f in below if f.name.endswith(".npz")]
    if npz:
        return "npz", npz
    files = [f for f in below if f.name.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise DataError(f"{field}: {path} holds no .npz batches and no PNG/JPEG images")
    return "images", files


def image_cache(cache_root: str, path: str, size: int, field: str = "data.path") -> str:
    """The converted-images file of the source ``path`` at ``size`` under ``cache_root`` (local)."""
    _, files = source_files(path, field)
    root = input_path(path, field)
    key = content_key(FORMAT_VERSION, file_signature(files, root if root.is_dir() else root.parent), size)
    return os.path.join(cache_root, f"images-{key}.npy")


def prepare_images(path: str, out: str, size: int, field: str = "data.path", progress: bool = True) -> int:
    """Convert the images at ``path`` into ``out`` (uint8 ``[N, size, size, 3]`` .npy) unless
    it exists; returns N. DataError naming ``field`` if nothing is found or a size is wrong."""
    if os.path.exists(out):
        return len(np.load(out, mmap_mode="r"))
    kind, files = source_files(path, field)
    if kind == "npz":
        counts = [len(_npz_rows(f)) for f in files]
        chunks = _npz_images(files, size, field)
    else:
        counts = [1] * len(files)
        chunks = _folder_images(files, size, field)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.{os.getpid()}.tmp.npy"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(sum(counts), size, size, 3))
    i = 0
    try:
        for chunk in progress_bar(chunks, total=len(counts), desc="images", disable=not progress):
            arr[i:i + len(chunk)] = chunk
            i += len(chunk)
        arr.flush()
        del arr
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return i


def to_unit_range(images):
    """uint8 images -> float32 in [-1, 1] (numpy or jax arrays alike)."""
    return images.astype(np.float32) / 127.5 - 1.0


def to_uint8(images) -> np.ndarray:
    """Images in [-1, 1] -> uint8."""
    return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


class ImageData:
    """Training images of a :func:`prepare_images` file, batched by a seeded epoch order."""

    def __init__(self, path: str, seed: int):
        self.images = np.load(path, mmap_mode="r")
        self.order = EpochOrder(len(self.images), seed)

    def batches(self, batch_size: int, start: int, num: int, rows=slice(None)) -> np.ndarray:
        """``uint8[num, rows, H, W, 3]``: rows ``rows`` of the steps' global batches (uint8 on
        the way to the devices, a quarter of float32's bytes; :func:`to_unit_range` there)."""
        return np.stack([self.images[np.sort(self.order.indices(batch_size, step, rows))]
                         for step in range(start, start + num)])


def demo_images(num: int, size: int, seed: int = 0) -> np.ndarray:
    """Synthetic uint8 images ``[num, size, size, 3]`` for the tiny config and the tests: a
    vertical colour gradient with one disc and one square of random colours, sizes and places
    (low-level statistics: colours and edges; higher-level: the two shapes' composition)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((num, size, size, 3), np.uint8)
    for i in range(num):
        top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = top + (bottom - top) * yy[..., None]
        cy, cx, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.1, 0.25)]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
        y0, x0, s = rng.uniform(0, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
        img[(yy >= y0) & (yy < y0 + s) & (xx >= x0) & (xx < x0 + s)] = rng.uniform(0, 255, 3)
        out[i] = img
    return out


def write_npz_batch(x: np.ndarray, path: str) -> None:
    """Images ``[N, H, W, 3]`` as a downsampled-ImageNet batch (``data``: ``[N, 3*H*W]``)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, data=x.transpose(0, 3, 1, 2).reshape(len(x), -1))


def main(argv):
    del argv
    from absl import flags
    f = flags.FLAGS
    write_npz_batch(demo_images(f.num_train, f.size, f.seed), os.path.join(f.out, "train", "train_data_batch_1.npz"))
    write_npz_batch(demo_images(f.num_val, f.size, f.seed + 1), os.path.join(f.out, "val", "val_data.npz"))
    print(f"{f.num_train} training and {f.num_val} validation images of {f.size}x{f.size} in {f.out}/{{train,val}}")


if __name__ == "__main__":
    from absl import app, flags
    flags.DEFINE_string("out", "data/demo_images", "Output directory (train/ and val/ .npz batches).")
    flags.DEFINE_integer("num_train", 2048, "Training images.")
    flags.DEFINE_integer("num_val", 512, "Validation images.")
    flags.DEFINE_integer("size", 16, "Image size.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    app.run(main)


def image_grid(x: np.ndarray, columns: int = 8) -> np.ndarray:
    """uint8 images ``[N, H, W, 3]`` laid out in a grid (white where the last row is short)."""
    n, h, w, _ = x.shape
    rows = -(-n // columns)
    grid = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, img in enumerate(x):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return grid
