"""Tests of InternVL's dynamic-resolution tiling (model.vlm.tiling), on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model.vlm.tiling import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    candidate_grids,
    dynamic_preprocess,
    find_closest_aspect_ratio,
    tiles_to_tensor,
)

S = 448


def blank(w: int, h: int) -> Image.Image:
    return Image.new("RGB", (w, h), (10, 20, 30))


def test_candidate_grids_sorted_by_area_and_bounded():
    grids = candidate_grids(1, 4)
    # areas 1; 2 (1x2, 2x1); 3 (1x3, 3x1); 4 (1x4, 2x2, 4x1)
    assert grids == [(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (2, 2), (4, 1)]
    assert all(2 <= c * r <= 6 for c, r in candidate_grids(2, 6))
    with pytest.raises(ValueError, match="min_num"):
        candidate_grids(3, 2)
    with pytest.raises(ValueError, match="min_num"):
        candidate_grids(0, 2)


def test_square_image_is_one_tile_without_thumbnail():
    # aspect 1: (1,1) diff 0 first; (2,2) ties but 448*448 = 200704 <= 0.5*448^2*4 = 401408 -> keep (1,1)
    tiles = dynamic_preprocess(blank(448, 448), max_num=12, image_size=S)
    assert len(tiles) == 1 and tiles[0].size == (S, S)


def test_two_to_one_image_is_two_tiles_plus_thumbnail():
    # aspect 2: (2,1) diff 0; (4,2) ties but 896*448 = 401408 <= 0.5*448^2*8 = 802816 -> keep (2,1)
    img = Image.new("RGB", (896, 448))
    img.paste((255, 0, 0), (0, 0, 448, 448))  # left half red, right half blue
    img.paste((0, 0, 255), (448, 0, 896, 448))
    tiles = dynamic_preprocess(img, image_size=S)
    assert len(tiles) == 3
    assert all(t.size == (S, S) for t in tiles)
    assert tiles[0].getpixel((200, 200)) == (255, 0, 0)  # row-major: left tile first
    assert tiles[1].getpixel((200, 200)) == (0, 0, 255)
    thumb = np.asarray(tiles[2])
    assert thumb[200, 100, 0] == 255 and thumb[200, 350, 2] == 255  # thumbnail = whole image


def test_wide_image_grid_by_hand():
    # 1000x300, aspect 10/3 = 3.33; grids with i*j <= 12: (3,1) diff 1/3 (area 3) is first;
    # (6,2) ties at diff 1/3 but 300000 <= 0.5*448^2*12 = 1204224 -> keep (3,1); (7,2) would be 3.5
    # (diff 1/6) but has 14 tiles > 12. So 3 tiles + thumbnail.
    w, h = 1000, 300
    grid = find_closest_aspect_ratio(w / h, candidate_grids(1, 12), w, h, S)
    assert grid == (3, 1)
    assert len(dynamic_preprocess(blank(w, h), image_size=S)) == 4


def test_tie_goes_to_the_larger_grid_for_a_big_image():
    # same aspect 10/3 but 2100x630 = 1323000 > 1204224: the tie goes to (6,2) -> 12 tiles + thumbnail
    w, h = 2100, 630
    assert find_closest_aspect_ratio(w / h, candidate_grids(1, 12), w, h, S) == (6, 2)
    assert len(dynamic_preprocess(blank(w, h), image_size=S)) == 13
    # 1344x1344 (aspect 1): (2,2) since 1806336 > 401408, then (3,3) since 1806336 > 903168
    assert len(dynamic_preprocess(blank(1344, 1344), image_size=S)) == 9 + 1


@pytest.mark.parametrize("size", [(64, 64), (1000, 300), (300, 1000), (5000, 40), (640, 480)])
@pytest.mark.parametrize("min_num,max_num", [(1, 1), (1, 6), (2, 12), (4, 4)])
def test_tile_count_bounds_and_sizes(size, min_num, max_num):
    tiles = dynamic_preprocess(blank(*size), min_num=min_num, max_num=max_num, image_size=32)
    n = len(tiles) - (1 if len(tiles) > 1 else 0)  # drop the thumbnail
    assert min_num <= n <= max_num
    assert all(t.size == (32, 32) for t in tiles)
    no_thumb = dynamic_preprocess(
        blank(*size), min_num=min_num, max_num=max_num, image_size=32, use_thumbnail=False
    )
    assert len(no_thumb) == n


def test_grayscale_converted_and_bad_arguments():
    tiles = dynamic_preprocess(Image.new("L", (100, 100), 7), image_size=16)
    assert tiles[0].mode == "RGB"
    with pytest.raises(ValueError, match="image_size"):
        dynamic_preprocess(blank(10, 10), image_size=0)


def test_tiles_to_tensor_normalises_with_imagenet_stats():
    tiles = [Image.new("RGB", (4, 4), (255, 0, 128)), Image.new("RGB", (4, 4), (0, 255, 0))]
    x = tiles_to_tensor(tiles)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32
    expected = [(1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], (0.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]]
    assert torch.allclose(x[0, 0], torch.full((4, 4), expected[0]))
    assert torch.allclose(x[0, 1], torch.full((4, 4), expected[1]))
    assert torch.allclose(x[1, 1], torch.full((4, 4), (1.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]))
    with pytest.raises(ValueError, match="one size"):
        tiles_to_tensor([Image.new("RGB", (4, 4)), Image.new("RGB", (8, 8))])
    with pytest.raises(ValueError, match="at least one"):
        tiles_to_tensor([])
