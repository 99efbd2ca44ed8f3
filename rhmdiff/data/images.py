"""Image data for the Improved-DDPM experiment (paper Sec. 5.2): ImageNet 64x64 from local files.

Sources (``data.path`` for training, ``data.val_path`` for the real images of the MMD):

* the downsampled-ImageNet ``.npz`` batches (``train_data_batch_1.npz`` ... and
  ``val_data.npz`` of image-net.org's "Imagenet64x64": key ``data``, uint8 ``[N, 3*64*64]``
  in channel-major order), or
* a folder of image files (PNG/JPEG, searched recursively, each already ``size x size``).

:func:`prepare_images` converts a source once into ``images.npy`` (uint8 ``[N, H, W, 3]``,
memory-mapped afterwards; written under a temporary name and renamed when complete).
:class:`ImageData` serves training batches scaled to [-1, 1]: rows ``rows`` (this host's
share) of the global batch at each step, epochs in a seeded order that is a pure function
of the step (:class:`rhmdiff.data.epochs.EpochOrder`).
"""
from __future__ import annotations

import glob
import os

import numpy as np
from tqdm.auto import tqdm

from rhmdiff.data.epochs import EpochOrder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _npz_images(files, size):
    for f in files:
        with np.load(f) as data:
            x = data["data"]
        yield x.reshape(len(x), 3, size, size).transpose(0, 2, 3, 1)


def _folder_images(files, size):
    from PIL import Image  # pillow comes with matplotlib
    for f in files:
        with Image.open(f) as im:
            arr = np.asarray(im.convert("RGB"))
        if arr.shape[:2] != (size, size):
            raise ValueError(f"{f}: image of {arr.shape[1]}x{arr.shape[0]} pixels, expected {size}x{size}")
        yield arr[None]


def prepare_images(path: str, out: str, size: int, field: str = "data.path", progress: bool = True) -> int:
    """Convert the images at ``path`` into ``out`` (uint8 ``[N, size, size, 3]`` .npy) unless
    it exists; returns N. FileNotFoundError naming ``field`` if nothing is found."""
    if os.path.exists(out):
        return len(np.load(out, mmap_mode="r"))
    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"{field}: {path!r} does not exist")
    npz = [path] if path.endswith(".npz") else sorted(glob.glob(os.path.join(path, "**", "*.npz"), recursive=True))
    if npz:
        counts = [len(np.load(f, mmap_mode="r")["data"]) for f in npz]
        chunks = _npz_images(npz, size)
    else:
        files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise FileNotFoundError(f"{field}: {path} holds no .npz batches and no PNG/JPEG images")
        counts = [1] * len(files)
        chunks = _folder_images(files, size)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp.npy"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(sum(counts), size, size, 3))
    i = 0
    for chunk in tqdm(chunks, total=len(counts), desc="images", disable=not progress):
        arr[i:i + len(chunk)] = chunk
        i += len(chunk)
    arr.flush()
    del arr
    os.replace(tmp, out)
    return i


def to_unit_range(images) -> np.ndarray:
    """uint8 images -> float32 in [-1, 1]."""
    return np.asarray(images, np.float32) / 127.5 - 1.0


def to_uint8(images) -> np.ndarray:
    """Images in [-1, 1] -> uint8."""
    return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


class ImageData:
    """Training images of a :func:`prepare_images` file, batched by a seeded epoch order."""

    def __init__(self, path: str, seed: int):
        self.images = np.load(path, mmap_mode="r")
        self.order = EpochOrder(len(self.images), seed)

    def batches(self, batch_size: int, start: int, num: int, rows=slice(None)) -> np.ndarray:
        """``float32[num, rows, H, W, 3]`` in [-1, 1]: rows ``rows`` of the steps' global batches."""
        return np.stack([to_unit_range(self.images[np.sort(self.order.indices(batch_size, step, rows))])
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
