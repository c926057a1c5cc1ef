"""InternVL's dynamic-resolution preprocessing: split an image into a grid of square tiles.

InternVL 1.5/2 (https://arxiv.org/abs/2404.16821, section 3.2 "Dynamic High-Resolution") feeds a
high-resolution image as ``i x j`` tiles of ``image_size`` pixels plus, when there is more than one
tile, a thumbnail of the whole image. The grid is chosen among all ``i x j`` with
``min_num <= i * j <= max_num``:

1. candidate grids are sorted by area ``i * j`` (ties: by ``i`` then ``j``, so the order is fixed);
2. the grid whose aspect ratio ``i / j`` is closest to the image's ``width / height`` wins;
3. on an exact tie with a later (hence not smaller) grid, the later grid wins only when the image
   has more than half of that grid's pixels (``w * h > 0.5 * image_size**2 * i * j``), so big
   images use more tiles and small ones are not blown up;
4. the image is resized to ``(i * image_size, j * image_size)`` and cut into tiles row-major
   (left to right, then top to bottom).

Provenance: the algorithm of ``dynamic_preprocess`` / ``find_closest_aspect_ratio`` in the
InternVL2 model card (https://huggingface.co/OpenGVLab/InternVL2-8B), written here from that
description; tensors are normalised with the ImageNet mean/std as InternVL's ``build_transform``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "candidate_grids",
    "dynamic_preprocess",
    "find_closest_aspect_ratio",
    "tiles_to_tensor",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def candidate_grids(min_num: int, max_num: int) -> list[tuple[int, int]]:
    """All ``(columns, rows)`` grids with ``min_num <= columns * rows <= max_num``, by area.

    Raises:
        ValueError: ``min_num < 1`` or ``max_num < min_num``.
    """
    if min_num < 1 or max_num < min_num:
        raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")
    grids = [
        (i, j) for i in range(1, max_num + 1) for j in range(1, max_num + 1) if min_num <= i * j <= max_num
    ]
    return sorted(grids, key=lambda g: (g[0] * g[1], g[0], g[1]))


def find_closest_aspect_ratio(
    aspect: float,
    target_ratios: Sequence[tuple[int, int]],
    width: int,
    height: int,
    image_size: int,
) -> tuple[int, int]:
    """The ``(columns, rows)`` grid whose ratio is closest to ``aspect`` (InternVL's rule).

    Args:
        aspect: the image's ``width / height``.
        target_ratios: candidate grids sorted by area (:func:`candidate_grids`).
        width: image width in pixels.
        height: image height in pixels.
        image_size: tile side in pixels.

    Returns:
        The chosen grid; on an exact tie a later grid replaces the current best when the image
        area exceeds half the later grid's pixel area.
    """
    best_diff, best = float("inf"), (1, 1)
    area = width * height
    for cols, rows in target_ratios:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best_diff, best = diff, (cols, rows)
        elif diff == best_diff and area > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


def dynamic_preprocess(
    image: Image.Image,
    *,
    min_num: int = 1,
    max_num: int = 12,
    image_size: int = 448,
    use_thumbnail: bool = True,
) -> list[Image.Image]:
    """Cut ``image`` into the tiles of its closest aspect-ratio grid (+ a thumbnail).

    Args:
        image: any PIL image (converted to RGB).
        min_num: fewest tiles.
        max_num: most tiles (the thumbnail is extra).
        image_size: tile side in pixels.
        use_thumbnail: append the whole image resized to one tile when there are several tiles.

    Returns:
        ``cols * rows`` tiles, row-major, each ``image_size x image_size``, then the thumbnail if any.

    Raises:
        ValueError: an empty image, a non-positive ``image_size`` or bad tile bounds.

    Example:
        >>> len(dynamic_preprocess(Image.new("RGB", (896, 448))))  # 2x1 grid + thumbnail
        3
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"cannot tile an empty image of size {image.size}")
    image = image.convert("RGB")
    grids = candidate_grids(min_num, max_num)
    cols, rows = find_closest_aspect_ratio(width / height, grids, width, height, image_size)
    resized = image.resize((cols * image_size, rows * image_size), Image.Resampling.BICUBIC)
    tiles = [
        resized.crop((c * image_size, r * image_size, (c + 1) * image_size, (r + 1) * image_size))
        for r in range(rows)
        for c in range(cols)
    ]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((image_size, image_size), Image.Resampling.BICUBIC))
    return tiles


def tiles_to_tensor(
    tiles: Sequence[Image.Image],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Stack tiles into normalised ``(N, 3, S, S)`` float32 ``pixel_values`` (InternVL's transform).

    Each tile is converted to RGB, scaled to [0, 1] and normalised per channel with ``mean``/``std``.

    Raises:
        ValueError: no tiles, tiles of different or non-square sizes, or a zero ``std``.
    """
    if not tiles:
        raise ValueError("tiles_to_tensor needs at least one tile")
    sizes = {t.size for t in tiles}
    if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
        raise ValueError(f"tiles must be square and of one size, got sizes {sorted(sizes)}")
    if any(s == 0 for s in std):
        raise ValueError(f"std must be non-zero, got {tuple(std)}")
    arr = np.stack([np.asarray(t.convert("RGB"), dtype=np.float32) / 255.0 for t in tiles])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()
