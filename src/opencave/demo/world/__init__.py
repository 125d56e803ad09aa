"""A deterministic synthetic connectomics world: neurons, watershed supervoxels, their graph and a proofreading history."""

from opencave.demo.world.build import build_world
from opencave.demo.world.sizes import WORLD_SIZES
from opencave.demo.world.spec import WorldGraph, WorldSpec, load_world

__all__ = ["WORLD_SIZES", "WorldGraph", "WorldSpec", "build_world", "load_world"]
