"""PNG grids of samples."""

import os

import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, rows: int, cols: int, pad: int = 1) -> np.ndarray:
  """(rows*cols, H, W, C) images in [0, 1] -> one uint8 (rows*(H+pad)+pad, ...) grid."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  if n < rows * cols:
    images = np.concatenate([images, np.zeros((rows * cols - n, h, w, c), np.float32)])
  grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.float32)
  for i in range(rows * cols):
    r, k = divmod(i, cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + k * (w + pad):pad + k * (w + pad) + w] = images[i]
  out = np.round(grid * 255).astype(np.uint8)
  return out[..., 0] if c == 1 else out


def save_grid(path: str, images: np.ndarray, rows: int, cols: int, scale: int = 1) -> str:
  """Writes a grid PNG (optionally upscaled by an integer factor); returns the path.
  Atomic (temporary name, then rename): a crash never leaves a partial image."""
  grid = image_grid(images, rows, cols)
  img = Image.fromarray(grid)
  if scale > 1:
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp.png"
  img.save(tmp)
  os.replace(tmp, path)
  return path


def class_grid_labels(num_classes: int, per_class: int) -> np.ndarray:
  """Labels for a grid with one row per class (capped at 10 rows for many classes)."""
  rows = min(num_classes, 10)
  return np.repeat(np.arange(rows, dtype=np.int32), per_class)
