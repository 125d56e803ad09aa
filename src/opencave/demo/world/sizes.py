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
    thousands of supervoxels, like the large pyramidal cells of a real dataset.
    """

    name: str
    volume_size: tuple[int, int, int]
    n_neurons: int
    n_giants: int

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
        WorldSize("large", (1024, 1024, 256), n_neurons=250, n_giants=6),
    )
}
