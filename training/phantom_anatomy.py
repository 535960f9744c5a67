"""Synthetic head-and-neck anatomy and MR contrasts for the phantom generator.

Tissues are drawn analytically in patient coordinates (LPS millimetres), so a
phantom looks the same at any matrix size. :func:`render_labels` rasterises
the tissues onto a grid, :func:`render_sequence` turns the label volume into
one MR sequence's magnitude image with texture, a smooth bias field and
Rician noise.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.result import SequenceRole


class Tissue(enum.IntEnum):
    """Tissue classes of the label volume, in drawing order."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    TONGUE = 3
    CORTICAL_BONE = 4
    MARROW = 5
    GLAND = 6
    CSF = 7
    LESION = 8
    NECROSIS = 9


# Relative signal of each tissue per sequence, on a 0-1 scale. T1: fat bright,
# muscle intermediate, tumour slightly hypointense. T2 with fat suppression:
# tumour hyperintense, fat still moderately bright as in fast spin echo.
# CE-T1 with fat suppression: the tumour rim enhances strongly, necrosis does not.
SIGNAL: dict[SequenceRole, dict[Tissue, float]] = {
    SequenceRole.T1: {
        Tissue.AIR: 0.0,
        Tissue.FAT: 0.92,
        Tissue.MUSCLE: 0.36,
        Tissue.TONGUE: 0.42,
        Tissue.CORTICAL_BONE: 0.04,
        Tissue.MARROW: 0.78,
        Tissue.GLAND: 0.62,
        Tissue.CSF: 0.18,
        Tissue.LESION: 0.30,
        Tissue.NECROSIS: 0.22,
    },
    SequenceRole.T2: {
        Tissue.AIR: 0.0,
        Tissue.FAT: 0.52,
        Tissue.MUSCLE: 0.20,
        Tissue.TONGUE: 0.27,
        Tissue.CORTICAL_BONE: 0.03,
        Tissue.MARROW: 0.40,
        Tissue.GLAND: 0.55,
        Tissue.CSF: 0.95,
        Tissue.LESION: 0.68,
        Tissue.NECROSIS: 0.88,
    },
    SequenceRole.CE_T1: {
        Tissue.AIR: 0.0,
        Tissue.FAT: 0.28,
        Tissue.MUSCLE: 0.40,
        Tissue.TONGUE: 0.47,
        Tissue.CORTICAL_BONE: 0.04,
        Tissue.MARROW: 0.38,
        Tissue.GLAND: 0.58,
        Tissue.CSF: 0.15,
        Tissue.LESION: 0.90,
        Tissue.NECROSIS: 0.40,
    },
}

# Pre-contrast T1 with fat saturation: a decoy series for role matching.
T1_FAT_SAT_SIGNAL = {**SIGNAL[SequenceRole.T1], Tissue.FAT: 0.25, Tissue.MARROW: 0.3}

# Noise standard deviation relative to the 0-1 signal scale (about SNR 30 in muscle).
NOISE_SIGMA = 0.022

# Tongue ellipsoid: centre and semi-axes in millimetres (x left, y posterior, z superior).
TONGUE_CENTRE = (0.0, -12.0, 4.0)
TONGUE_SEMI_AXES = (24.0, 33.0, 22.0)


@dataclass(frozen=True)
class LesionSpec:
    """Shape and appearance of the synthetic tumour.

    ``centre_mm`` and ``semi_axes_mm`` describe the ellipsoid before its
    surface is deformed; ``surface_terms`` contains rows of (frequency x, y, z,
    phase, amplitude) of the low-frequency surface noise. ``heterogeneity``
    (0-1) scales the internal texture and the size of a necrotic core.
    """

    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    surface_terms: tuple[tuple[float, float, float, float, float], ...]
    heterogeneity: float

    def __post_init__(self) -> None:
        if any(a <= 0 for a in self.semi_axes_mm):
            raise ValueError(f"semi_axes_mm must be positive, got {self.semi_axes_mm}")
        if not 0.0 <= self.heterogeneity <= 1.0:
            raise ValueError(f"heterogeneity must be in [0, 1], got {self.heterogeneity}")


@dataclass(frozen=True)
class Grid:
    """Axial grid of the phantom: voxel centres along x, y and z in millimetres."""

    x_mm: np.ndarray
    y_mm: np.ndarray
    z_mm: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(z, y, x)``."""
        return (self.z_mm.size, self.y_mm.size, self.x_mm.size)


def make_grid(rows: int, columns: int, slices: int, pixel_mm: float, slice_mm: float) -> Grid:
    """Build a grid centred on the origin with the given matrix and spacing."""
    x_mm = (np.arange(columns, dtype=np.float32) - (columns - 1) / 2.0) * pixel_mm
    y_mm = (np.arange(rows, dtype=np.float32) - (rows - 1) / 2.0) * pixel_mm
    z_mm = (np.arange(slices, dtype=np.float32) - (slices - 1) / 2.0) * slice_mm
    return Grid(x_mm=x_mm, y_mm=y_mm, z_mm=z_mm)


def sample_lesion(rng: np.random.Generator, heterogeneity: float | None = None) -> LesionSpec:
    """Draw a lesion of varied size and irregular shape inside the lateral tongue."""
    side = rng.choice((-1.0, 1.0))
    radius = rng.uniform(5.5, 13.0)

    # Tumours spread along the mucosa more than into the depth, so the
    # semi-axis across the tongue (x) is the shortest.
    semi_axes = (
        float(radius * rng.uniform(0.55, 0.9)),
        float(radius * rng.uniform(0.8, 1.3)),
        float(radius * rng.uniform(0.8, 1.3)),
    )

    # Tongue cancer grows from the lateral mucosa inwards, so the centre lies
    # within one semi-axis of the lateral surface and the clipped lesion touches it.
    inset = rng.uniform(0.2, 0.8) * semi_axes[0]
    centre = (
        TONGUE_CENTRE[0] + side * (TONGUE_SEMI_AXES[0] - inset),
        TONGUE_CENTRE[1] + rng.uniform(-14.0, 8.0),
        TONGUE_CENTRE[2] + rng.uniform(-7.0, 7.0),
    )

    terms = []
    for _ in range(4):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        frequency = direction * rng.uniform(1.5, 3.5)
        terms.append(
            (
                *map(float, frequency),
                float(rng.uniform(0, 2 * np.pi)),
                float(rng.uniform(0.04, 0.1)),
            )
        )

    if heterogeneity is None:
        heterogeneity = float(rng.uniform(0.0, 1.0))
    return LesionSpec(
        centre_mm=tuple(map(float, centre)),
        semi_axes_mm=semi_axes,
        surface_terms=tuple(terms),
        heterogeneity=heterogeneity,
    )


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float
) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _axial_labels(grid: Grid) -> np.ndarray:
    """Draw the tissues that do not change along z as one (y, x) label slice."""
    x = grid.x_mm[None, :]
    y = grid.y_mm[:, None]
    labels = np.full((grid.y_mm.size, grid.x_mm.size), Tissue.AIR, dtype=np.uint8)

    labels[_ellipse(x, y, 0, 5, 68, 85)] = Tissue.FAT
    labels[_ellipse(x, y, 0, 5, 61, 78)] = Tissue.MUSCLE
    for side in (-1.0, 1.0):
        labels[_ellipse(x, y, side * 44, 48, 11, 13)] = Tissue.GLAND

    # Mandible: a horseshoe of cortical bone with marrow inside, open posteriorly.
    anterior = y < 18
    cortex = _ellipse(x, y, 0, 4, 52, 62) & ~_ellipse(x, y, 0, 4, 44, 54) & anterior
    marrow = _ellipse(x, y, 0, 4, 50, 60) & ~_ellipse(x, y, 0, 4, 46, 56) & anterior
    labels[cortex] = Tissue.CORTICAL_BONE
    labels[marrow] = Tissue.MARROW

    labels[_ellipse(x, y, 0, 62, 13, 12)] = Tissue.MARROW
    labels[_ellipse(x, y, 0, 78, 5, 5)] = Tissue.CSF
    labels[_ellipse(x, y, 0, 37, 10, 8)] = Tissue.AIR
    return labels


def _ellipsoid(grid: Grid, centre: tuple[float, ...], semi: tuple[float, ...]) -> np.ndarray:
    dz = ((grid.z_mm - centre[2]) / semi[2])[:, None, None] ** 2
    dy = ((grid.y_mm - centre[1]) / semi[1])[None, :, None] ** 2
    dx = ((grid.x_mm - centre[0]) / semi[0])[None, None, :] ** 2
    return (dx + dy + dz) <= 1.0


def tongue_mask(grid: Grid) -> np.ndarray:
    """Return the tongue ellipsoid as a boolean ``[z, y, x]`` array."""
    return _ellipsoid(grid, TONGUE_CENTRE, TONGUE_SEMI_AXES)


def lesion_masks(grid: Grid, lesion: LesionSpec) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the deformed lesion and its necrotic core, clipped to the tongue.

    Only the lesion's bounding box is evaluated, so large matrices stay fast.
    """
    semi = np.asarray(lesion.semi_axes_mm, dtype=np.float32)
    centre = np.asarray(lesion.centre_mm, dtype=np.float32)
    reach = semi * 1.5
    axes = (grid.z_mm, grid.y_mm, grid.x_mm)
    bounds = []
    for axis, c, r in zip(axes, centre[::-1], reach[::-1]):
        lo = int(np.searchsorted(axis, c - r))
        hi = int(np.searchsorted(axis, c + r, side="right"))
        bounds.append(slice(lo, max(hi, lo)))

    z = grid.z_mm[bounds[0]][:, None, None]
    y = grid.y_mm[bounds[1]][None, :, None]
    x = grid.x_mm[bounds[2]][None, None, :]
    qx, qy, qz = (x - centre[0]) / semi[0], (y - centre[1]) / semi[1], (z - centre[2]) / semi[2]
    norm = np.sqrt(qx**2 + qy**2 + qz**2) + 1e-6

    radius = np.ones_like(norm)
    for fx, fy, fz, phase, amplitude in lesion.surface_terms:
        radius += amplitude * np.cos((fx * qx + fy * qy + fz * qz) / norm * np.pi + phase)

    lesion_box = norm <= radius
    core_box = norm <= radius * (0.55 * lesion.heterogeneity - 0.1)

    tongue = tongue_mask(grid)
    lesion_full = np.zeros(grid.shape, dtype=bool)
    core_full = np.zeros(grid.shape, dtype=bool)
    lesion_full[tuple(bounds)] = lesion_box
    core_full[tuple(bounds)] = core_box
    lesion_full &= tongue

    # Every lesion covers at least the voxel nearest its centre, so no phantom has an empty mask.
    if not lesion_full.any():
        index = tuple(int(np.abs(axis - c).argmin()) for axis, c in zip(axes, centre[::-1]))
        lesion_full[index] = True
    return lesion_full, core_full & lesion_full


def render_labels(grid: Grid, lesion: LesionSpec) -> tuple[np.ndarray, np.ndarray]:
    """Build the tissue label volume and the boolean tumour mask on ``grid``."""
    labels = np.broadcast_to(_axial_labels(grid), grid.shape).copy()

    # Mandible and floor of mouth end above the tongue dorsum; higher slices are soft palate.
    above_mandible = grid.z_mm > TONGUE_CENTRE[2] + 18.0
    bone = np.isin(labels, (Tissue.CORTICAL_BONE, Tissue.MARROW))
    labels[bone & above_mandible[:, None, None]] = Tissue.MUSCLE

    oral_air = _ellipsoid(grid, (0.0, -10.0, 10.0), (30.0, 38.0, 28.0))
    labels[oral_air] = Tissue.AIR
    sublingual = _ellipsoid(grid, (0.0, -16.0, -22.0), (18.0, 24.0, 7.0))
    labels[sublingual] = Tissue.GLAND
    labels[tongue_mask(grid)] = Tissue.TONGUE

    lesion_mask, core = lesion_masks(grid, lesion)
    labels[lesion_mask] = Tissue.LESION
    labels[core] = Tissue.NECROSIS
    return labels, lesion_mask


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], coarse: int = 8
) -> np.ndarray:
    """Return a smooth random field with zero mean and unit standard deviation."""
    coarse_shape = (max(2, shape[0] // 4), coarse, coarse)
    field = rng.normal(size=coarse_shape).astype(np.float32)
    zoom = [s / c for s, c in zip(shape, coarse_shape)]
    field = ndimage.zoom(field, zoom, order=1, mode="nearest", grid_mode=True)
    field = field[: shape[0], : shape[1], : shape[2]]
    return (field - field.mean()) / (field.std() + 1e-6)


def bias_field(rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """Return a smooth multiplicative bias field near 1, as from receive coil sensitivity."""
    extent = max(float(np.abs(grid.x_mm).max()), 1.0)
    x = (grid.x_mm / extent)[None, None, :]
    y = (grid.y_mm / extent)[None, :, None]
    z = (grid.z_mm / max(float(np.abs(grid.z_mm).max()), 1.0))[:, None, None]
    c = rng.uniform(-0.08, 0.08, size=5).astype(np.float32)
    return 1.0 + c[0] * x + c[1] * y + c[2] * z + c[3] * x * y - 0.1 * (x**2 + y**2) * (1 + c[4])


def render_sequence(
    labels: np.ndarray,
    signal: dict[Tissue, float],
    grid: Grid,
    lesion: LesionSpec,
    rng: np.random.Generator,
    texture: np.ndarray,
) -> np.ndarray:
    """Render one sequence's magnitude image on a 0-1 scale as float32 ``[z, y, x]``.

    ``signal`` maps each tissue to its relative signal, for example ``SIGNAL[role]``.
    ``texture`` is a shared smooth field, so tissue texture is the same
    anatomy in every sequence while noise and bias differ.
    """
    lut = np.zeros(len(Tissue), dtype=np.float32)
    for tissue, value in signal.items():
        lut[int(tissue)] = value
    image = lut[labels]

    in_lesion = labels == Tissue.LESION
    soft = (labels == Tissue.MUSCLE) | (labels == Tissue.TONGUE)
    image[soft] *= 1.0 + 0.05 * texture[soft]
    # Heterogeneous tumours show a coarser, stronger internal texture, which radiomics picks up.
    image[in_lesion] *= 1.0 + (0.04 + 0.22 * lesion.heterogeneity) * texture[in_lesion]

    pixel_mm = float(abs(grid.x_mm[1] - grid.x_mm[0])) if grid.x_mm.size > 1 else 1.0
    sigma_px = 0.6 / pixel_mm
    if sigma_px > 0.2:
        image = ndimage.gaussian_filter(image, sigma=(0, sigma_px, sigma_px), mode="nearest")
    image *= bias_field(rng, grid)

    noise_real = rng.normal(scale=NOISE_SIGMA, size=image.shape).astype(np.float32)
    noise_imag = rng.normal(scale=NOISE_SIGMA, size=image.shape).astype(np.float32)
    return np.sqrt((image + noise_real) ** 2 + noise_imag**2)
