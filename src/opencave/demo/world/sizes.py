"""The named demo worlds: how big the volume is and how many neurons live in it."""

from __future__ import annotations

from dataclasses import dataclass

RESOLUTION = (8, 8, 40)
VOXEL_OFFSET = (0, 0, 0)
CHUNK_SIZE = (64, 64, 16)


@dataclass(frozen=True)
class WorldSize:
    """Volume extent (voxels) and population of one named world.

    ``n_giants`` neurons get a much larger arbor, so big worlds hold a few cells with many
    thousands of supervoxels, like the large pyramidal cells of a real dataset. The other
    fields default to the small and medium worlds' values:

    * ``arbor_factor`` scales the arbors of the ordinary cells and ``neurite_thickness`` their
      initial neurite radii, so a crowded world gets smaller, thinner cells;
    * ``giants_first``: the giants grow one after another before the other somas are placed;
      later cells (and stray neurites) keep clear of them, so in a crowded world the giants do
      not take most contacts (and synapses);
    * ``n_strays`` neurites of cells whose somas lie outside the volume cross it, as most of
      the neuropil of a real volume does: orphan fragments that carry most synapses.
    """

    name: str
    volume_size: tuple[int, int, int]
    n_neurons: int
    n_giants: int
    arbor_factor: float = 1.0
    neurite_thickness: float = 1.0
    giants_first: bool = False
    n_strays: int = 0

    @property
    def chunks_per_axis(self) -> tuple[int, int, int]:
        return tuple(-(-v // c) for v, c in zip(self.volume_size, CHUNK_SIZE))  # type: ignore[return-value]

    @property
    def arbor_scale(self) -> float:
        """Linear size relative to the small world; arbors grow with it."""
        return self.volume_size[0] / 256


WORLD_SIZES: dict[str, WorldSize] = {
    size.name: size
    for size in (
        WorldSize("small", (256, 256, 64), n_neurons=12, n_giants=0),
        WorldSize("medium", (512, 512, 128), n_neurons=60, n_giants=2),
        WorldSize(
            "large",
            (1024, 1024, 256),
            n_neurons=2500,
            n_giants=6,
            arbor_factor=0.2,
            neurite_thickness=0.35,
            giants_first=True,
            n_strays=4000,
        ),
    )
}
