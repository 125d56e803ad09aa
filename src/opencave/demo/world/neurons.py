"""Synthetic neuron morphologies: an ellipsoidal soma with random trees of tapered neurites.

Geometry lives in voxel coordinates, but growth happens in physical space (nm), because z
voxels are five times thicker than x/y voxels: a neurite turning towards z must not jump
through the volume. Neurites stop at the volume border and in front of foreign somas, so every
nucleus stays inside its own cell.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from opencave.demo.world.sizes import RESOLUTION, WorldSize

NM_PER_VOXEL = np.array(RESOLUTION, dtype=np.float64)
MIN_RADIUS = 1.7  # x/y voxels; at >= 1.6 a neurite stays 6-connected
STEP_NM = 40.0
SOMA_KEEP_OUT = 1.4  # neurites stop this many soma radii from a foreign soma centre

EXCITATORY_TYPES = ("23P", "4P", "5P-IT", "5P-ET", "6P-IT")
INHIBITORY_TYPES = ("BC", "MC", "BPC", "NGC")
PIA = np.array([0.0, -1.0, 0.0])  # cortical depth runs along +y, as in most EM datasets


@dataclass(frozen=True)
class Piece:
    """One unbranched stretch of a cell: the soma (a single point) or a neurite between branch points."""

    parent: int  # index of the parent piece within the neuron; -1 for the soma
    points: np.ndarray  # (k, 3) axis in voxel coordinates
    radii: np.ndarray  # (k,) radius in x/y voxels


@dataclass(frozen=True)
class Neuron:
    neuron_id: int
    cell_class: str
    cell_type: str
    nucleus: tuple[int, int, int]  # soma centre, voxels
    soma_radius: float  # x/y voxels
    soma_z_radius: float  # z voxels
    pieces: tuple[Piece, ...]  # pieces[0] is the soma

    @cached_property
    def children(self) -> list[list[int]]:
        kids: list[list[int]] = [[] for _ in self.pieces]
        for index, piece in enumerate(self.pieces):
            if piece.parent >= 0:
                kids[piece.parent].append(index)
        return kids

    def subtree(self, piece: int) -> list[int]:
        """``piece`` and all pieces descending from it."""
        out, todo = [], [piece]
        while todo:
            current = todo.pop()
            out.append(current)
            todo.extend(self.children[current])
        return sorted(out)


@dataclass(frozen=True)
class _Tree:
    """How one primary neurite (a dendrite or the axon) grows."""

    direction: np.ndarray  # initial direction, physical space
    radius: float  # initial x/y radius, voxels
    budget_nm: float  # total path length of the tree
    bias: np.ndarray  # constant pull on the direction
    persistence: float
    piece_nm: tuple[float, float]  # length between branch points
    taper: float  # radius factor per step
    shrink: float = 0.85  # radius factor at each fork


class _Somas:
    """Soma centres and radii of all cells, to keep neurites out of foreign somas."""

    def __init__(self, centres: np.ndarray, radii: np.ndarray) -> None:
        self.centres = centres
        self.radii = radii  # (n, 3) voxels

    def blocks(self, point: np.ndarray, own: int) -> bool:
        inside = (((point - self.centres) / self.radii) ** 2).sum(axis=1) < SOMA_KEEP_OUT**2
        inside[own] = False
        return bool(inside.any())


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    return _unit(rng.normal(size=3))


def _fork(rng: np.random.Generator, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two child directions diverging symmetrically by 25-50 degrees."""
    side = _random_unit(rng)
    side = _unit(side - side.dot(direction) * direction)
    spread = np.tan(np.radians(rng.uniform(25, 50)))
    return _unit(direction + spread * side), _unit(direction - spread * side)


def _grow_tree(
    rng: np.random.Generator,
    pieces: list[Piece],
    start: np.ndarray,
    tree: _Tree,
    somas: _Somas,
    own: int,
    volume: np.ndarray,
    budget_nm: float,
) -> float:
    """Breadth-first growth until the length budget is spent or all tips have stopped.

    Returns the unspent budget.
    """
    tips = deque([(0, start, tree.direction, tree.radius)])
    remaining = budget_nm
    while tips and remaining > 0:
        parent, position, direction, radius = tips.popleft()
        target = rng.uniform(*tree.piece_nm)
        points, radii = [position], [radius]
        grown, stopped = 0.0, False
        while grown < target and remaining > 0:
            noise = _random_unit(rng)
            direction = _unit(
                tree.persistence * direction + (1 - tree.persistence) * noise + tree.bias
            )
            step = points[-1] + direction * STEP_NM / NM_PER_VOXEL
            if somas.blocks(step, own):
                stopped = True
                break
            radius = max(MIN_RADIUS, radius * tree.taper)
            points.append(step)
            radii.append(radius)
            grown += STEP_NM
            remaining -= STEP_NM
            if np.any(step < 0) or np.any(step >= volume):
                stopped = True
                break
        if len(points) < 2:
            continue
        pieces.append(Piece(parent, np.array(points), np.array(radii)))
        if not stopped and remaining > 0:
            for child in _fork(rng, direction):
                tips.append(
                    (len(pieces) - 1, points[-1], child, max(MIN_RADIUS, radius * tree.shrink))
                )
    return max(remaining, 0.0)


def _trees(rng: np.random.Generator, cell_class: str, budget: float, giant: bool) -> list[_Tree]:
    """Primary neurites of a cell: pyramidal cells get an apical dendrite towards the pia.

    Giant cells have thick, barely tapering dendrites, so they fill many supervoxels.
    """
    thickness, taper, shrink = (1.6, 0.9985, 0.95) if giant else (1.0, 0.993, 0.85)
    none = np.zeros(3)
    trees = []
    if cell_class == "excitatory":
        trees.append(
            _Tree(
                PIA,
                8.0 * thickness,
                0.35 * budget,
                0.12 * PIA,
                0.85,
                (300, 700),
                (1 + taper) / 2,
                shrink,
            )
        )
        trees.append(_Tree(-PIA, 3.5, 0.25 * budget, 0.08 * -PIA, 0.8, (250, 600), 0.998))
        basal = int(rng.integers(3, 6))
        share = 0.4 * budget / basal
        for _ in range(basal):
            trees.append(
                _Tree(
                    _random_unit(rng), 6.0 * thickness, share, none, 0.75, (200, 500), taper, shrink
                )
            )
    else:
        trees.append(_Tree(_random_unit(rng), 3.0, 0.4 * budget, none, 0.7, (150, 400), 0.998))
        dendrites = int(rng.integers(4, 7))
        share = 0.6 * budget / dendrites
        for _ in range(dendrites):
            trees.append(
                _Tree(
                    _random_unit(rng), 5.5 * thickness, share, none, 0.75, (200, 450), taper, shrink
                )
            )
    return trees


def _place_somas(
    rng: np.random.Generator, n: int, central: int, volume: np.ndarray, radii: np.ndarray
) -> np.ndarray:
    """Soma centres away from the border and from each other (rejection sampling).

    The first ``central`` somas sit in the middle quarter (x/y), so their big arbors stay inside.
    """
    margin = np.array([18, 18, 6])
    middle = np.array([volume[0] / 4, volume[1] / 4, 6])
    centres: list[np.ndarray] = []
    min_nm = 3.2 * float(radii[:, 0].max()) * NM_PER_VOXEL[0]
    while len(centres) < n:
        edge = middle if len(centres) < central else margin
        for _ in range(10_000):
            candidate = np.floor(rng.uniform(edge, volume - edge))
            if all(np.linalg.norm((candidate - c) * NM_PER_VOXEL) >= min_nm for c in centres):
                break
        else:
            raise ValueError("the volume is too small for this many somas")
        centres.append(candidate)
    return np.array(centres)


def grow_neurons(rng: np.random.Generator, size: WorldSize) -> list[Neuron]:
    """All neurons of a world; the first ``size.n_giants`` are large thick-tufted pyramidal cells."""
    n = size.n_neurons
    volume = np.array(size.volume_size, dtype=np.float64)
    xy_radii = rng.uniform(10, 14, size=n)
    z_radii = xy_radii * NM_PER_VOXEL[0] / NM_PER_VOXEL[2] * rng.uniform(1.1, 1.3, size=n)
    radii = np.stack([xy_radii, xy_radii, np.maximum(z_radii, 2.5)], axis=1)
    centres = _place_somas(rng, n, size.n_giants, volume, radii)
    somas = _Somas(centres, radii)
    neurons = []
    for index in range(n):
        giant = index < size.n_giants
        if giant:
            cell_class, cell_type = "excitatory", "5P-ET"
        elif rng.random() < 0.8:
            cell_class, cell_type = "excitatory", str(rng.choice(EXCITATORY_TYPES))
        else:
            cell_class, cell_type = "inhibitory", str(rng.choice(INHIBITORY_TYPES))
        budget = 9000.0 * size.arbor_scale * (16.0 if giant else rng.uniform(0.6, 1.4))
        soma = Piece(-1, centres[index][None, :], np.array([radii[index, 0]]))
        pieces = [soma]
        leftover = 0.0  # length a tree could not use (it left the volume) goes to the next one
        for tree in _trees(rng, cell_class, budget, giant):
            leftover = _grow_tree(
                rng, pieces, centres[index], tree, somas, index, volume, tree.budget_nm + leftover
            )
        neurons.append(
            Neuron(
                neuron_id=index + 1,
                cell_class=cell_class,
                cell_type=cell_type,
                nucleus=tuple(int(v) for v in centres[index]),  # type: ignore[arg-type]
                soma_radius=float(radii[index, 0]),
                soma_z_radius=float(radii[index, 2]),
                pieces=tuple(pieces),
            )
        )
    return neurons
