"""Per-modality image renderers of the synthetic corpus (vectorised numpy, no I/O).

:func:`render_image` draws one image of a modality from the pixel boxes of its catalogue
regions (so every named region is where its box says) and a list of lesions, then applies the
acquisition shift of the site. It returns a float image in ``[0, 1]`` (``H x W`` for grayscale
modalities, ``H x W x 3`` for colour ones) and one boolean mask per lesion; the lesion's pixel box
is the tight box of its mask. Appearance per modality:

* ``ct``: axial chest, body ellipse, dark lungs with vessels, heart, aorta, bright spine/sternum.
* ``mri``: axial FLAIR-like brain, scalp/skull rings, grey/white matter texture, dark ventricles.
* ``xray``: PA chest projection, dark lungs crossed by bright ribs, mediastinum and heart.
* ``fundus``: orange-red disc, vignetted, with vessel arcades, a yellow optic disc, dark macula.
* ``pathology``: pink eosin background, stromal fibres, purple nuclei, a gland lumen.
* ``dermoscopy``: skin tone, furrows, dermatoscope vignette, pigmented lesions.
* ``ultrasound``: fan-shaped sector with Rayleigh speckle and depth attenuation.
* ``endoscopy``: pink mucosa with folds, a dark lumen, specular highlights, octagonal vignette.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "COLOUR_MODALITIES",
    "GRAYSCALE_MODALITIES",
    "LESION_STYLE",
    "LesionShape",
    "SiteShift",
    "lesion_mask",
    "render_image",
    "to_uint8",
]

Box = tuple[float, float, float, float]
GRAYSCALE_MODALITIES = ("ct", "mri", "xray", "ultrasound")
COLOUR_MODALITIES = ("fundus", "pathology", "dermoscopy", "endoscopy")

#: Lesion appearance: a gray level (grayscale modalities) or an RGB colour.
LESION_STYLE: dict[str, dict[str, float | tuple[float, float, float]]] = {
    "ct": {"nodule": 0.56, "mass": 0.30, "effusion": 0.40},  # mass: hypodense, visible in lung and liver
    "mri": {"glioma": 0.90, "hemorrhage": 0.10, "edema": 0.74},
    "xray": {
        "nodule": 0.64,
        "consolidation": 0.56,
        "effusion": 0.68,
        "pneumothorax": 0.02,
        "cardiomegaly": 0.82,
    },
    "fundus": {
        "hemorrhage": (0.42, 0.04, 0.03),
        "exudate": (0.97, 0.87, 0.36),
        "drusen": (0.90, 0.78, 0.48),
        "cotton wool spot": (0.95, 0.93, 0.88),
    },
    "pathology": {
        "carcinoma": (0.30, 0.10, 0.45),
        "necrosis": (0.86, 0.78, 0.80),
        "lymphocytic infiltrate": (0.20, 0.17, 0.55),
    },
    "dermoscopy": {
        "melanoma": (0.20, 0.12, 0.12),
        "nevus": (0.50, 0.32, 0.20),
        "seborrheic keratosis": (0.64, 0.48, 0.30),
        "basal cell carcinoma": (0.94, 0.52, 0.64),
    },
    "ultrasound": {"cyst": 0.02, "mass": 0.82, "stone": 0.98},  # mass: hyperechoic; stone also shadows
    "endoscopy": {"polyp": (0.95, 0.55, 0.50), "ulcer": (0.96, 0.93, 0.80), "bleeding": (0.50, 0.02, 0.02)},
}


@dataclass(frozen=True)
class SiteShift:
    """Acquisition shift of a site, applied after rendering (documented in ``generator.json``).

    Attributes:
        contrast: multiplies deviations from mid-gray.
        brightness: added after the contrast change.
        gamma: intensity exponent (> 1 darkens mid-tones).
        noise: standard deviation of added Gaussian noise.
        blur: box-blur radius in pixels (0: none), a softer reconstruction kernel.
        size_factor: stored resolution relative to the profile's image size.
        intensity_scale: scale of the stored DICOM values (real values keep their meaning
            through RescaleSlope), external sites only.
    """

    contrast: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0
    noise: float = 0.015
    blur: int = 0
    size_factor: float = 1.0
    intensity_scale: float = 1.0


@dataclass(frozen=True)
class LesionShape:
    """A lesion's geometry in pixels: centre, semi-axes, rotation and boundary irregularity phase."""

    lesion_type: str
    cx: float
    cy: float
    a: float
    b: float
    angle: float
    phase: float

    @property
    def reach(self) -> float:
        """Largest distance of the boundary from the centre (pixels)."""
        return max(self.a, self.b) * (1.0 + _IRREGULARITY)


_IRREGULARITY = 0.12


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _ellipse(box: Box | None, size: int, shrink: float = 0.0, power: float = 2.0) -> np.ndarray:
    """Boolean super-ellipse inscribed in a pixel box, optionally shrunk by a fraction."""
    if box is None:
        return np.zeros((size, size), bool)
    yy, xx = _grid(size)
    x1, y1, x2, y2 = box
    rx, ry = (x2 - x1) / 2 * (1 - shrink), (y2 - y1) / 2 * (1 - shrink)
    u = np.abs((xx - (x1 + x2) / 2) / max(rx, 0.5))
    v = np.abs((yy - (y1 + y2) / 2) / max(ry, 0.5))
    return u**power + v**power <= 1.0


def _frac_box(x1: float, y1: float, x2: float, y2: float, size: int) -> Box:
    return (x1 * size, y1 * size, x2 * size, y2 * size)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth unit-variance-ish noise: a ``cells x cells`` Gaussian lattice, bilinearly upsampled."""
    lattice = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = lattice[i] * (1 - f)[:, None] + lattice[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _paint(img: np.ndarray, mask: np.ndarray, value, alpha: float = 1.0) -> None:
    """Blend ``value`` (gray level or RGB) into ``img`` where ``mask`` (bool or weights) is set."""
    w = mask.astype(np.float32) * alpha
    if img.ndim == 3:
        w = w[..., None]
        value = np.asarray(value, np.float32)
    img *= 1 - w
    img += w * value


def _stamp_discs(img, rng, size, n, box, radius, colour, jitter=0.25):
    """Paint ``n`` small discs with random centres inside a pixel box (nuclei, highlights)."""
    yy, xx = _grid(size)
    x1, y1, x2, y2 = box
    cx = rng.uniform(x1, x2, n)
    cy = rng.uniform(y1, y2, n)
    rr = radius * (1 + jitter * rng.standard_normal(n))
    for x, y, r in zip(cx, cy, rr):
        r = max(r, 0.6)
        lo_x, hi_x = max(int(x - r - 1), 0), min(int(x + r + 2), size)
        lo_y, hi_y = max(int(y - r - 1), 0), min(int(y + r + 2), size)
        if lo_x >= hi_x or lo_y >= hi_y:
            continue
        m = (xx[lo_y:hi_y, lo_x:hi_x] - x) ** 2 + (yy[lo_y:hi_y, lo_x:hi_x] - y) ** 2 <= r * r
        _paint(img[lo_y:hi_y, lo_x:hi_x], m, colour, 0.85)


def lesion_mask(shape: LesionShape, size: int) -> np.ndarray:
    """Boolean mask of a lesion: a rotated ellipse with a 3-lobed irregular boundary.

    A lesion with semi-axes of at least one pixel always covers at least one pixel.
    """
    yy, xx = _grid(size)
    dx, dy = xx - shape.cx, yy - shape.cy
    c, s = math.cos(shape.angle), math.sin(shape.angle)
    u, v = (dx * c + dy * s) / max(shape.a, 1.0), (-dx * s + dy * c) / max(shape.b, 1.0)
    theta = np.arctan2(v, u)
    r_max = 1.0 + _IRREGULARITY * np.sin(3 * theta + shape.phase)
    mask = u * u + v * v <= r_max * r_max
    if not mask.any():  # sub-pixel lesion: keep its centre pixel
        mask[min(int(shape.cy), size - 1), min(int(shape.cx), size - 1)] = True
    return mask


def to_uint8(img: np.ndarray) -> np.ndarray:
    """``[0, 1]`` float image -> ``uint8`` (rounded, clipped)."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# backgrounds: anatomy drawn from the region boxes
# ---------------------------------------------------------------------------------------------


def _ct(size: int, R: Mapping[str, Box], rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((size, size), np.float32)
    body = _frac_box(0.06, 0.14, 0.94, 0.86, size)
    _paint(img, _ellipse(body, size), 0.36)
    _paint(img, _ellipse(body, size, shrink=0.06), 0.47)
    _paint(img, _ellipse(R.get("liver"), size), 0.54)
    vessels = _smooth_noise(rng, size, max(size // 5, 4)) > 1.3
    for lung in ("right lung", "left lung"):
        m = _ellipse(R.get(lung), size, power=2.4)
        _paint(img, m, 0.07)
        _paint(img, m & vessels, 0.22)
    _paint(img, _ellipse(R.get("heart"), size), 0.52)
    _paint(img, _ellipse(R.get("heart"), size, shrink=0.45), 0.58)
    _paint(img, _ellipse(R.get("aorta"), size), 0.64)
    _paint(img, _ellipse(R.get("spine"), size), 0.95)
    _paint(img, _ellipse(R.get("spine"), size, shrink=0.3), 0.80)
    _paint(img, _ellipse(R.get("sternum"), size), 0.86)
    return img


def _mri(size: int, R: Mapping[str, Box], rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((size, size), np.float32)
    head = _frac_box(0.15, 0.08, 0.85, 0.92, size)
    _paint(img, _ellipse(head, size), 0.58)
    _paint(img, _ellipse(head, size, shrink=0.05), 0.07)
    _paint(img, _ellipse(head, size, shrink=0.09), 0.50)
    gyri = _smooth_noise(rng, size, max(size // 4, 4))
    white = _ellipse(head, size, shrink=0.24)
    img += np.where(_ellipse(head, size, shrink=0.09) & ~white, 0.07 * gyri, 0.0).astype(np.float32)
    _paint(img, white, 0.37)
    img += np.where(white, 0.02 * gyri, 0.0).astype(np.float32)
    box = R.get("lateral ventricles")
    if box is not None:
        x1, y1, x2, y2 = box
        xm = (x1 + x2) / 2
        _paint(img, _ellipse((x1, y1, xm - 0.02 * size, y2), size), 0.09)
        _paint(img, _ellipse((xm + 0.02 * size, y1, x2, y2), size), 0.09)
    cb = _ellipse(R.get("cerebellum"), size)
    yy, _ = _grid(size)
    _paint(img, cb, 0.45)
    img += np.where(cb, 0.06 * np.sin(yy * (12.0 / max(size, 1)) * 2 * math.pi), 0.0).astype(np.float32)
    return img


def _xray(size: int, R: Mapping[str, Box], rng: np.random.Generator) -> np.ndarray:
    yy, xx = _grid(size)
    img = np.full((size, size), 0.06, np.float32)
    trunk = (np.abs(xx / size - 0.5) < 0.46 - 0.25 * np.clip(0.12 - yy / size, 0, None) * 4) & (
        yy > 0.02 * size
    )
    _paint(img, trunk, 0.44)
    spacing = 0.075 * size
    for lung in ("right lung", "left lung"):
        box = R.get(lung)
        m = _ellipse(box, size, power=3.0)
        _paint(img, m, 0.17)
        if box is None:
            continue
        xc = (box[0] + box[2]) / 2
        curve = yy - 0.9 * ((xx - xc) / size) ** 2 * size - 0.04 * (xx - xc)
        ribs = np.mod(curve / spacing, 1.0) < 0.32
        _paint(img, m & ribs, 0.33, 0.8)
    _paint(img, _ellipse(R.get("mediastinum"), size, power=4.0), 0.62)
    _paint(img, _ellipse(R.get("heart"), size), 0.66)
    _paint(img, _ellipse(R.get("trachea"), size, power=6.0), 0.28)
    img += 0.03 * _smooth_noise(rng, size, max(size // 8, 3))
    return img


def _fundus(size: int, R: Mapping[str, Box], rng: np.random.Generator) -> np.ndarray:
    yy, xx = _grid(size)
    img = np.zeros((size, size, 3), np.float32)
    r2 = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (0.46 * size) ** 2
    base = np.array([0.82, 0.34, 0.14], np.float32) * (1 - 0.35 * np.clip(r2, 0, 1))[..., None]
    base *= (1 + 0.06 * _smooth_noise(rng, size, max(size // 6, 3)))[..., None]
    img[r2 <= 1] = base[r2 <= 1]
    _paint(img, _ellipse(R.get("macula"), size).astype(np.float32), (0.50, 0.17, 0.08), 0.55)
    disc = R.get("optic disc")
    dcx, dcy = ((disc[0] + disc[2]) / 2, (disc[1] + disc[3]) / 2) if disc else (0.69 * size, 0.48 * size)
    for sign in (-1, 1):
        arcade = R.get("superior arcade" if sign < 0 else "inferior arcade")
        height = abs(((arcade[1] + arcade[3]) / 2 if arcade else dcy + sign * 0.25 * size) - dcy)
        x_end = arcade[0] if arcade else 0.22 * size
        for k, (colour, width) in enumerate((((0.52, 0.10, 0.07), 0.022), ((0.72, 0.20, 0.12), 0.016))):
            t = np.clip((dcx - xx) / max(dcx - x_end, 1.0), 0, 1)
            f = dcy + sign * height * (0.85 + 0.15 * k) * np.sqrt(t)
            vessel = (np.abs(yy - f) < max(width * size, 0.6)) & (xx < dcx) & (xx > x_end - 0.08 * size)
            _paint(img, vessel & (r2 <= 1), colour, 0.9)
            nasal = (
                np.abs(yy - (dcy + sign * 0.5 * height * np.sqrt(np.clip((xx - dcx) / (0.25 * size), 0, 1))))
                < max(width * size * 0.7, 0.5)
            ) & (xx > dcx)
            _paint(img, nasal & (r2 <= 1), colour, 0.8)
    _paint(img, _ellipse(disc, size), (0.98, 0.84, 0.52))
    _paint(img, _ellipse(disc, size, shrink=0.5), (1.0, 0.95, 0.78))
    return img


def _pathology(size: int, R: Mapping[str, Box], rng: np.random.Generator) -> np.ndarray:
    yy, xx = _grid(size)
    img = np.empty((size, size, 3), np.float32)
    img[:] = (0.93, 0.66, 0.79)
    img *= (1 + 0.04 * _smooth_noise(rng, size, max(size // 8, 3)))[..., None]
    stroma = _ellipse(R.get("stroma"), size, power=3.0)
    fibres = 0.5 + 0.5 * np.sin(
        (xx * 0.8 + yy * 0.6) * (2 * math.pi / max(size / 10, 2)) + 2 * _smooth_noise(rng, size, 4)
    )
    _paint(img, stroma.astype(np.float32) * fibres, (0.97, 0.80, 0.86), 0.6)
    full = (0.0, 0.0, float(size), float(size))
    nuc_r = max(size / 64 * 1.3, 0.7)
    _stamp_discs(img, rng, size, int(size * size / 90), full, nuc_r, (0.38, 0.22, 0.58))
    if R.get("epithelium") is not None:
        _stamp_discs(img, rng, size, int(size * size / 80), R["epithelium"], nuc_r, (0.34, 0.18, 0.55))
    gland = R.get("gland")
    if gland is not None:
        _paint(img, _ellipse(gland, size), (0.40, 0.22, 0.60), 0.8)
        _paint(img, _ellipse(gland, size, shrink=0.25), (0.97, 0.94, 0.96))
    return img


def _dermoscopy(size: int, R: Mapping[str, Box], rng: np.random.Generator) -> np.ndarray:
    yy, xx = _grid(size)
    img = np.empty((size, size, 3), np.float32)
    img[:] = (0.88, 0.67, 0.55)
    img *= (1 + 0.05 * _smooth_noise(rng, size, max(size // 10, 3)))[..., None]
    furrows = np.sin((xx - yy) * (2 * math.pi / max(size / 12, 2))) * np.sin(
        (xx + yy) * (2 * math.pi / max(size / 9, 2))
    )
    img *= (1 - 0.03 * furrows)[..., None]
    for _ in range(int(rng.integers(0, 3))):
        a, c = rng.uniform(-1.5, 1.5), rng.uniform(0, size)
        hair = np.abs(yy - (a * (xx - size / 2) + c)) / math.sqrt(1 + a * a) < max(size / 110, 0.45)
        _paint(img, hair, (0.22, 0.15, 0.12), 0.8)
    r2 = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (0.53 * size) ** 2
    img *= np.clip((1.0 - r2) * 6, 0, 1)[..., None]
    return img


def _ultrasound(size: int, R: Mapping[str, Box], rng: np.random.Generator) -> np.ndarray:
    img = np.full((size, size), 0.42, np.float32)
    _paint(img, _ellipse(R.get("liver"), size, power=2.5), 0.46)
    _paint(img, _ellipse(R.get("gallbladder"), size), 0.04)
    _paint(img, _ellipse(R.get("right kidney"), size), 0.30)
    _paint(img, _ellipse(R.get("right kidney"), size, shrink=0.5), 0.68)
    return img


def _endoscopy(size: int, R: Mapping[str, Box], rng: np.random.Generator) -> np.ndarray:
    yy, xx = _grid(size)
    lumen = R.get("lumen") or _frac_box(0.4, 0.4, 0.6, 0.6, size)
    lx, ly = (lumen[0] + lumen[2]) / 2, (lumen[1] + lumen[3]) / 2
    r = np.sqrt((xx - lx) ** 2 + (yy - ly) ** 2) / size
    img = np.empty((size, size, 3), np.float32)
    img[:] = (0.86, 0.46, 0.40)
    folds = 1 - 0.14 * (0.5 + 0.5 * np.sin(r * 2 * math.pi * 5 + 1.5 * _smooth_noise(rng, size, 4)))
    img *= folds[..., None]
    depth = np.clip((r - 0.03) / 0.16, 0, 1) ** 0.8
    img *= (0.12 + 0.88 * depth)[..., None]
    return img


_BACKGROUNDS: dict[str, Callable[[int, Mapping[str, Box], np.random.Generator], np.ndarray]] = {
    "ct": _ct,
    "mri": _mri,
    "xray": _xray,
    "fundus": _fundus,
    "pathology": _pathology,
    "dermoscopy": _dermoscopy,
    "ultrasound": _ultrasound,
    "endoscopy": _endoscopy,
}


# ---------------------------------------------------------------------------------------------
# lesions, modality post-processing, site shift
# ---------------------------------------------------------------------------------------------


def _paint_lesion(
    img: np.ndarray, mask: np.ndarray, modality: str, shape: LesionShape, rng, size: int
) -> None:
    value = LESION_STYLE[modality][shape.lesion_type]
    texture = 1 + 0.08 * _smooth_noise(rng, size, max(size // 8, 3))
    if img.ndim == 3:
        colour = np.asarray(value, np.float32)[None, None, :] * texture[..., None]
        w = mask[..., None].astype(np.float32) * 0.92
        img[:] = img * (1 - w) + colour * w
    else:
        img[:] = np.where(mask, img * 0.08 + value * texture * 0.92, img)
    if modality == "ultrasound" and shape.lesion_type == "stone":
        yy, _ = _grid(size)
        below = mask.any(axis=0)[None, :] & (yy > shape.cy + shape.b)
        img[below] *= 0.3
    if modality == "ultrasound" and shape.lesion_type == "cyst":
        yy, _ = _grid(size)
        below = mask.any(axis=0)[None, :] & (yy > shape.cy + shape.b) & (yy < shape.cy + 4 * shape.b)
        img[below] = np.minimum(img[below] * 1.35, 1.0)


def _post(modality: str, img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = _grid(size)
    if modality == "ultrasound":
        ax, ay = size / 2, -0.05 * size
        r = np.sqrt((xx - ax) ** 2 + (yy - ay) ** 2) / size
        theta = np.arctan2(xx - ax, yy - ay)
        fan = (np.abs(theta) < 0.62) & (r > 0.15) & (r < 1.02)
        speckle = rng.rayleigh(1.0 / math.sqrt(math.pi / 2), (size, size)).astype(np.float32)
        img = img * speckle * (1.1 - 0.45 * r)
        img[~fan] = 0.0
    elif modality == "endoscopy":
        _stamp_discs(
            img,
            rng,
            size,
            int(rng.integers(3, 7)),
            (0.1 * size, 0.1 * size, 0.9 * size, 0.9 * size),
            max(size / 90, 0.6),
            (1.0, 1.0, 1.0),
        )
        u, v = np.abs(xx / size - 0.5) * 2, np.abs(yy / size - 0.5) * 2
        img[(u + v > 1.45) | (u > 0.97) | (v > 0.97)] = 0.0
    elif modality in ("ct", "mri"):
        img = img + 0.012 * rng.standard_normal((size, size)).astype(np.float32)
    return img


def _box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    k = 2 * radius + 1
    pad = [(radius, radius), (radius, radius)] + [(0, 0)] * (img.ndim - 2)
    p = np.pad(img, pad, mode="edge")
    c = np.cumsum(np.cumsum(p, axis=0), axis=1)
    c = np.pad(c, [(1, 0), (1, 0)] + [(0, 0)] * (img.ndim - 2))
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def _apply_shift(img: np.ndarray, shift: SiteShift, rng: np.random.Generator) -> np.ndarray:
    if shift.blur > 0:
        img = _box_blur(img, shift.blur)
    img = (np.clip(img, 0, 1) - 0.5) * shift.contrast + 0.5 + shift.brightness
    img = np.clip(img, 0, 1) ** shift.gamma
    if shift.noise > 0:
        img = img + shift.noise * rng.standard_normal(img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def render_image(
    modality: str,
    *,
    size: int,
    regions: Mapping[str, Box],
    lesions: Sequence[LesionShape],
    rng: np.random.Generator,
    shift: SiteShift = SiteShift(),
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Render one image of ``modality`` with its regions and lesions.

    Args:
        modality: one of the eight rendered modalities.
        size: output width and height in pixels.
        regions: catalogue region name -> pixel box ``(x1, y1, x2, y2)``; unknown names are
            ignored, missing ones are simply not drawn.
        lesions: lesion geometries (their ``lesion_type`` must be in :data:`LESION_STYLE`).
        rng: random stream for textures and noise.
        shift: the site's acquisition shift.

    Returns:
        The float image in ``[0, 1]`` (``HxW`` or ``HxWx3``) and one boolean mask per lesion.

    Raises:
        ValueError: unknown modality or lesion type, or a size below 8 pixels.
    """
    if modality not in _BACKGROUNDS:
        raise ValueError(f"cannot render modality {modality!r}; known: {sorted(_BACKGROUNDS)}")
    if size < 8:
        raise ValueError(f"image size must be at least 8 pixels, got {size}")
    img = _BACKGROUNDS[modality](size, regions, rng)
    masks = []
    for shape in lesions:
        if shape.lesion_type not in LESION_STYLE[modality]:
            raise ValueError(
                f"no {modality} lesion type {shape.lesion_type!r}; known: {sorted(LESION_STYLE[modality])}"
            )
        m = lesion_mask(shape, size)
        _paint_lesion(img, m, modality, shape, rng, size)
        masks.append(m)
    img = _post(modality, img, rng, size)
    return _apply_shift(img, shift, rng), masks
