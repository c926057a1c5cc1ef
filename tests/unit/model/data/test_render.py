"""Tests of the per-modality renderers: shapes, distinct appearance, visible lesions, site shift."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.data.catalogue import load_region_catalogue
from model.data.render import (
    COLOUR_MODALITIES,
    GRAYSCALE_MODALITIES,
    LESION_STYLE,
    LesionShape,
    SiteShift,
    lesion_mask,
    render_image,
)

MODALITIES = GRAYSCALE_MODALITIES + COLOUR_MODALITIES
CAT = load_region_catalogue()


def _regions(modality: str, size: int) -> dict:
    return {e.name: tuple(v * size for v in e.box) for e in CAT.for_modality(modality)}


DEFAULT_SHIFT = SiteShift()


def _render(modality, seed, size=32, lesions=(), shift=DEFAULT_SHIFT):
    return render_image(
        modality,
        size=size,
        regions=_regions(modality, size),
        lesions=list(lesions),
        rng=np.random.default_rng(seed),
        shift=shift,
    )


def _features(img: np.ndarray) -> np.ndarray:
    rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
    gray = rgb.mean(axis=2)
    layout = (
        gray.reshape(4, gray.shape[0] // 4, 4, gray.shape[1] // 4).mean(axis=(1, 3)).ravel()
    )  # 4x4 thumbnail
    return np.array([*rgb.mean(axis=(0, 1)), gray.std(), (gray < 0.05).mean(), (gray > 0.7).mean(), *layout])


@pytest.mark.parametrize("modality", MODALITIES)
def test_shape_range_and_determinism(modality):
    img, masks = _render(modality, seed=3, size=40)
    assert img.shape == ((40, 40) if modality in GRAYSCALE_MODALITIES else (40, 40, 3))
    assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1 and masks == []
    again, _ = _render(modality, seed=3, size=40)
    assert np.array_equal(img, again)
    other, _ = _render(modality, seed=4, size=40)
    assert not np.array_equal(img, other)


def test_modalities_look_different():
    """Colour statistics plus a 4x4 thumbnail separate the modalities (nearest centroid, unseen seeds)."""
    feats = {m: [_features(_render(m, seed)[0]) for seed in range(5)] for m in MODALITIES}
    centroids = {m: np.mean(f[:3], axis=0) for m, f in feats.items()}
    for a, b in itertools.combinations(MODALITIES, 2):
        assert np.linalg.norm(centroids[a] - centroids[b]) > 0.2, (a, b)
    for m, f in feats.items():
        for x in f[3:]:
            nearest = min(centroids, key=lambda k: np.linalg.norm(centroids[k] - x))
            assert nearest == m


@pytest.mark.parametrize("modality,lesion_type", [(m, t) for m in MODALITIES for t in LESION_STYLE[m]])
def test_every_lesion_type_is_visible_inside_its_mask(modality, lesion_type):
    size = 48
    regions = _regions(modality, size)
    from model.data.synth import MODALITY_SPECS

    x1, y1, x2, y2 = regions[MODALITY_SPECS[modality].lesions[lesion_type][0]]
    a = 0.3 * min(x2 - x1, y2 - y1)
    shape = LesionShape(lesion_type, (x1 + x2) / 2, (y1 + y2) / 2, a, 0.8 * a, 0.4, 1.0)
    with_lesion, masks = _render(modality, 1, size, [shape])
    without, _ = _render(modality, 1, size)
    (mask,) = masks
    assert mask.sum() >= 4
    diff = np.abs(np.atleast_1d(with_lesion[mask].mean(axis=0) - without[mask].mean(axis=0)))
    assert np.linalg.norm(diff) > 0.08, f"{modality}/{lesion_type} barely changes the image ({diff})"


def test_lesion_mask_is_non_empty_and_within_reach():
    tiny = LesionShape("nodule", 10.3, 7.8, 0.4, 0.3, 0.0, 0.0)  # semi-axes are floored at one pixel
    assert 1 <= lesion_mask(tiny, 16).sum() <= 5
    big = LesionShape("nodule", 20.0, 20.0, 6.0, 4.0, 0.7, 2.0)
    ys, xs = np.nonzero(lesion_mask(big, 40))
    assert len(xs) > 50
    assert np.all(np.hypot(xs + 0.5 - 20, ys + 0.5 - 20) <= big.reach + 1e-6)


def test_site_shift_changes_contrast_and_sharpness():
    base, _ = _render("ct", 2, 64, shift=SiteShift(noise=0.0))
    low, _ = _render("ct", 2, 64, shift=SiteShift(contrast=0.7, noise=0.0))
    blurred, _ = _render("ct", 2, 64, shift=SiteShift(blur=1, noise=0.0))
    assert low.std() < 0.8 * base.std()
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.8 * np.abs(np.diff(base, axis=1)).mean()


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="cannot render modality"):
        _render("other", 0)
    with pytest.raises(ValueError, match="no ct lesion type 'glioma'"):
        _render("ct", 0, lesions=[LesionShape("glioma", 10, 10, 3, 3, 0, 0)])
    with pytest.raises(ValueError, match="at least 8"):
        render_image("ct", size=4, regions={}, lesions=[], rng=np.random.default_rng(0))
