"""Synthetic neuron morphologies: an ellipsoidal soma with random trees of tapered neurites.

Geometry lives in voxel coordinates, but growth happens in physical space (nm), because z
voxels are five times thicker than x/y voxels: a neurite turning towards z must not jump
through the volume. Neurites stop at the volume border and in front of foreign somas, so every
nucleus stays inside its own cell. Big worlds add stray neurites of cells outside the volume.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from opencave.demo.world.sizes import RESOLUTION, WorldSize

NM_PER_VOXEL = np.array(RESOLUTION, dtype=np.float64)
MIN_RADIUS = 1.7  # x/y voxels; at >= 1.6 a neurite stays 6-connected
STEP_NM = 40.0
SOMA_KEEP_OUT = 1.4  # neurites stop this many soma radii from a foreign soma centre
_CELL_XY, _CELL_Z = 32.0, 8.0  # voxels; grid cell of the soma look-up
_SOMA_CELL = np.array([_CELL_XY, _CELL_XY, _CELL_Z])

EXCITATORY_TYPES = ("23P", "4P", "5P-IT", "5P-ET", "6P-IT")
INHIBITORY_TYPES = ("BC", "MC", "BPC", "NGC")
GIANT_SOMA = 1.5  # soma size of a giant grown first, relative to the others
_TERRITORY_CELL = np.array([4.0, 4.0, 1.0])  # voxels
_TERRITORY_MARGIN = np.array([2.0, 2.0, 1.0])  # voxels around a neurite that count as taken
STRAY_RADIUS = (5.0, 13.0)  # x/y voxels
STRAY_CROSSES_GIANTS = 0.01  # share of stray neurites that do not stop at a giant
STRAY_NM = (4000.0, 12000.0)  # path length of a stray neurite
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
    """Soma centres and radii of all cells, to keep neurites out of foreign somas.

    Each soma is filed under the cells of a coarse grid that its keep-out ellipsoid's bounding
    box touches, so a query only tests the few somas nearby.
    """

    def __init__(self, centres: np.ndarray, radii: np.ndarray) -> None:
        self.centres = centres
        self.radii = radii  # (n, 3) voxels
        reach = SOMA_KEEP_OUT * radii + 1.0
        lo = np.floor((centres - reach) / _SOMA_CELL).astype(np.int64)
        hi = np.floor((centres + reach) / _SOMA_CELL).astype(np.int64)
        cells: dict[tuple[int, int, int], list[int]] = {}
        for index in range(len(centres)):
            for key in itertools.product(*(range(a, b + 1) for a, b in zip(lo[index], hi[index]))):
                cells.setdefault(key, []).append(index)
        self._cells = {key: np.array(members) for key, members in cells.items()}

    def blocks(self, point: np.ndarray, own: int) -> bool:
        x, y, z = point.tolist()
        near = self._cells.get(
            (math.floor(x / _CELL_XY), math.floor(y / _CELL_XY), math.floor(z / _CELL_Z))
        )
        if near is None:
            return False
        inside = (((point - self.centres[near]) / self.radii[near]) ** 2).sum(axis=1)
        return bool(((inside < SOMA_KEEP_OUT**2) & (near != own)).any())


def _unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(v.dot(v))  # what np.linalg.norm computes, without its overhead


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
    territory: _Territory | None = None,
) -> float:
    """Breadth-first growth until the length budget is spent or all tips have stopped.

    Tips also stop where they enter ``territory``. Returns the unspent budget.
    """
    tips = deque([(0, start, tree.direction, tree.radius)])
    vx, vy, vz = volume.tolist()
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
            if somas.blocks(step, own) or (territory is not None and territory.hits(step)):
                stopped = True
                break
            radius = max(MIN_RADIUS, radius * tree.taper)
            points.append(step)
            radii.append(radius)
            grown += STEP_NM
            remaining -= STEP_NM
            x, y, z = step.tolist()
            if x < 0 or y < 0 or z < 0 or x >= vx or y >= vy or z >= vz:
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


def _trees(
    rng: np.random.Generator, cell_class: str, budget: float, giant: bool, thickness: float
) -> list[_Tree]:
    """Primary neurites of a cell: pyramidal cells get an apical dendrite towards the pia.

    ``thickness`` scales the initial radii of the dendrites (and of an ordinary cell's axon).
    Giant cells have thick, barely tapering dendrites, so they fill many supervoxels.
    """
    taper, shrink = (0.9985, 0.95) if giant else (0.993, 0.85)
    axon = 1.0 if giant else thickness

    def thick(radius: float, factor: float) -> float:
        return max(MIN_RADIUS, radius * factor)

    none = np.zeros(3)
    trees = []
    if cell_class == "excitatory":
        trees.append(
            _Tree(
                PIA,
                thick(8.0, thickness),
                0.35 * budget,
                0.12 * PIA,
                0.85,
                (300, 700),
                (1 + taper) / 2,
                shrink,
            )
        )
        trees.append(
            _Tree(-PIA, thick(3.5, axon), 0.25 * budget, 0.08 * -PIA, 0.8, (250, 600), 0.998)
        )
        basal = int(rng.integers(3, 6))
        share = 0.4 * budget / basal
        for _ in range(basal):
            trees.append(
                _Tree(
                    _random_unit(rng),
                    thick(6.0, thickness),
                    share,
                    none,
                    0.75,
                    (200, 500),
                    taper,
                    shrink,
                )
            )
    else:
        trees.append(
            _Tree(_random_unit(rng), thick(3.0, axon), 0.4 * budget, none, 0.7, (150, 400), 0.998)
        )
        dendrites = int(rng.integers(4, 7))
        share = 0.6 * budget / dendrites
        for _ in range(dendrites):
            trees.append(
                _Tree(
                    _random_unit(rng),
                    thick(5.5, thickness),
                    share,
                    none,
                    0.75,
                    (200, 450),
                    taper,
                    shrink,
                )
            )
    return trees


def _place_somas(
    rng: np.random.Generator,
    n: int,
    central: int,
    volume: np.ndarray,
    radii: np.ndarray,
    territory: _Territory | None = None,
) -> np.ndarray:
    """Soma centres away from the border and from each other (rejection sampling).

    The first ``central`` somas sit in the middle quarter (x/y), so their big arbors stay inside.
    With the ``territory`` of cells grown already, new somas (and their keep-out zones) also
    stay clear of those cells.
    """
    margin = np.array([18, 18, 6])
    middle = np.array([volume[0] / 4, volume[1] / 4, 6])
    centres = np.zeros((n, 3))
    min_nm = 3.2 * float(radii[:, 0].max()) * NM_PER_VOXEL[0]
    for count in range(n):
        edge = middle if count < central else margin
        for _ in range(10_000):
            candidate = np.floor(rng.uniform(edge, volume - edge))
            distance = np.linalg.norm((candidate - centres[:count]) * NM_PER_VOXEL, axis=1)
            if np.all(distance >= min_nm) and (
                territory is None or not territory.covers(candidate, SOMA_KEEP_OUT * radii[count])
            ):
                break
        else:
            raise ValueError("the volume is too small for this many somas")
        centres[count] = candidate
    return centres


class _Territory:
    """Where the cells grown so far lie, coarsely (cells of ``_TERRITORY_CELL`` voxels): later
    neurites stop where they meet them, as at a soma, so those cells are touched only by tips."""

    def __init__(self, volume: np.ndarray, neurons: Sequence[Neuron] = ()) -> None:
        self.shape = tuple(int(v) for v in np.ceil(volume / _TERRITORY_CELL))
        self.grid = np.zeros(self.shape, dtype=bool)
        for neuron in neurons:
            self.add(neuron)

    def add(self, neuron: Neuron) -> None:
        upper = np.array(self.shape)
        for index, piece in enumerate(neuron.pieces):
            r = piece.radii[:, None]
            if index == 0:
                reach = np.array([[neuron.soma_radius, neuron.soma_radius, neuron.soma_z_radius]])
            else:
                reach = np.concatenate([r, r, r / np.minimum(5.0, r)], axis=1)
            reach = reach + _TERRITORY_MARGIN
            lo = np.clip(np.floor((piece.points - reach) / _TERRITORY_CELL), 0, upper)
            hi = np.clip(np.floor((piece.points + reach) / _TERRITORY_CELL) + 1, 0, upper)
            for a, b in zip(lo.astype(np.int64).tolist(), hi.astype(np.int64).tolist()):
                self.grid[a[0] : b[0], a[1] : b[1], a[2] : b[2]] = True

    def hits(self, point: np.ndarray) -> bool:
        x, y, z = (int(v) for v in np.floor(point / _TERRITORY_CELL).tolist())
        sx, sy, sz = self.shape
        return 0 <= x < sx and 0 <= y < sy and 0 <= z < sz and bool(self.grid[x, y, z])

    def covers(self, centre: np.ndarray, reach: np.ndarray) -> bool:
        """Whether any part of the box ``centre`` ± ``reach`` is taken."""
        upper = np.array(self.shape)
        lo = np.clip(np.floor((centre - reach) / _TERRITORY_CELL), 0, upper).astype(np.int64)
        hi = np.clip(np.floor((centre + reach) / _TERRITORY_CELL) + 1, 0, upper).astype(np.int64)
        return bool(self.grid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].any())


def _grow_cell(
    rng: np.random.Generator,
    size: WorldSize,
    index: int,
    centre: np.ndarray,
    radii: np.ndarray,
    somas: _Somas,
    territory: _Territory | None,
) -> Neuron:
    """Neuron ``index`` grown from its soma; draws are those of the original one-pass growth."""
    giant = index < size.n_giants
    if giant:
        cell_class, cell_type = "excitatory", "5P-ET"
    elif rng.random() < 0.8:
        cell_class, cell_type = "excitatory", str(rng.choice(EXCITATORY_TYPES))
    else:
        cell_class, cell_type = "inhibitory", str(rng.choice(INHIBITORY_TYPES))
    if giant:
        budget = 9000.0 * size.arbor_scale * 16.0
    else:
        budget = 9000.0 * size.arbor_scale * rng.uniform(0.6, 1.4) * size.arbor_factor
    volume = np.array(size.volume_size, dtype=np.float64)
    pieces = [Piece(-1, centre[None, :], np.array([radii[0]]))]
    leftover = 0.0  # length a tree could not use (it left the volume) goes to the next one
    thickness = 1.6 if giant else size.neurite_thickness
    for tree in _trees(rng, cell_class, budget, giant, thickness):
        leftover = _grow_tree(
            rng,
            pieces,
            centre,
            tree,
            somas,
            index,
            volume,
            tree.budget_nm + leftover,
            territory,
        )
    return Neuron(
        neuron_id=index + 1,
        cell_class=cell_class,
        cell_type=cell_type,
        nucleus=tuple(int(v) for v in centre),  # type: ignore[arg-type]
        soma_radius=float(radii[0]),
        soma_z_radius=float(radii[2]),
        pieces=tuple(pieces),
    )


def grow_neurons(rng: np.random.Generator, size: WorldSize) -> list[Neuron]:
    """All neurons of a world; the first ``size.n_giants`` are large thick-tufted pyramidal cells.

    With ``size.giants_first`` the giants grow one after another, each soma placed outside the
    giants grown before it and its neurites stopping where they meet them; then the other
    somas are placed outside all giants, and their neurites stop at the giants too. In this
    mode giant somas are ``GIANT_SOMA`` times larger.
    """
    n = size.n_neurons
    volume = np.array(size.volume_size, dtype=np.float64)
    xy_radii = rng.uniform(10, 14, size=n)
    z_radii = xy_radii * NM_PER_VOXEL[0] / NM_PER_VOXEL[2] * rng.uniform(1.1, 1.3, size=n)
    radii = np.stack([xy_radii, xy_radii, np.maximum(z_radii, 2.5)], axis=1)
    if not size.giants_first:
        centres = _place_somas(rng, n, size.n_giants, volume, radii)
        somas = _Somas(centres, radii)
        return [
            _grow_cell(rng, size, index, centres[index], radii[index], somas, None)
            for index in range(n)
        ]
    g = size.n_giants
    radii[:g] *= GIANT_SOMA
    centres = np.zeros((n, 3))
    territory = _Territory(volume)
    neurons: list[Neuron] = []
    for index in range(g):
        centres[index] = _place_somas(rng, 1, 1, volume, radii[index : index + 1], territory)[0]
        somas = _Somas(centres[: index + 1], radii[: index + 1])
        neurons.append(_grow_cell(rng, size, index, centres[index], radii[index], somas, territory))
        territory.add(neurons[-1])
    centres[g:] = _place_somas(rng, n - g, 0, volume, radii[g:], territory)
    somas = _Somas(centres, radii)
    neurons += [
        _grow_cell(rng, size, index, centres[index], radii[index], somas, territory)
        for index in range(g, n)
    ]
    return neurons


def grow_strays(rng: np.random.Generator, size: WorldSize, neurons: list[Neuron]) -> list[Piece]:
    """Neurites of cells outside the volume: ``size.n_strays`` sparsely branching, untapered
    neurites entering through a face of the volume; they stop at the border, in front of somas
    and (most of them) at giants. Painted after all cells, they are cut wherever they cross one.

    Their pieces belong to no cell (parents are left at -1): every supervoxel is an orphan.
    """
    if size.n_strays == 0:
        return []
    volume = np.array(size.volume_size, dtype=np.float64)
    somas = _Somas(
        np.array([neuron.nucleus for neuron in neurons], dtype=np.float64),
        np.array([[n.soma_radius, n.soma_radius, n.soma_z_radius] for n in neurons]),
    )
    territory = _Territory(volume, neurons[: size.n_giants]) if size.giants_first else None
    extent = volume * NM_PER_VOXEL
    faces = np.array([extent[1] * extent[2], extent[0] * extent[2], extent[0] * extent[1]])
    strays: list[Piece] = []
    for _ in range(size.n_strays):
        axis = int(rng.choice(3, p=faces / faces.sum()))
        high = bool(rng.random() < 0.5)
        start = rng.uniform(0, volume)
        start[axis] = volume[axis] - 0.5 if high else 0.0
        inward = np.zeros(3)
        inward[axis] = -1.0 if high else 1.0
        direction = _unit(inward + 0.8 * _random_unit(rng))
        tree = _Tree(
            direction,
            float(rng.uniform(*STRAY_RADIUS)),
            float(rng.uniform(*STRAY_NM)),
            np.zeros(3),
            0.9,
            (1500, 4000),
            1.0,
            0.9,
        )
        pieces: list[Piece] = []
        avoid = territory if rng.random() >= STRAY_CROSSES_GIANTS else None
        _grow_tree(rng, pieces, start, tree, somas, -1, volume, tree.budget_nm, avoid)
        strays.extend(Piece(-1, piece.points, piece.radii) for piece in pieces)
    return strays
