"""How long a demo world's EM image takes to build, against a floor of the unavoidable work:
reading the segmentation and writing the same number of JPEG chunks at every scale.

    python bench/bench_imagery.py --size medium [--world DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import support  # noqa: E402,F401  (keeps HOME out of the user's files)
from opencave.demo.world import build_world  # noqa: E402
from opencave.services.imagery import build_image  # noqa: E402
from opencave.services.imagery.volume import CHUNK_SIZE, scale_count  # noqa: E402
from opencave.services.segmentation.volume import WatershedVolume  # noqa: E402


def floor_seconds(world_dir: Path, out: Path) -> float:
    """Read every label, then write a noise image of the same size with cloud-volume (JPEG, all scales)."""
    from cloudvolume import CloudVolume

    start = time.perf_counter()
    ws = WatershedVolume(world_dir / "ws")
    labels = ws.cutout((0, 0, 0), ws.size)
    pixels = (np.random.default_rng(0).integers(0, 256, size=labels.shape, dtype=np.uint8) // 4 + (labels % 128).astype(np.uint8))
    del labels
    info = CloudVolume.create_new_info(1, "image", "uint8", "jpeg", list(ws.resolution), [0, 0, 0], list(ws.size), chunk_size=list(CHUNK_SIZE))
    writer = CloudVolume("file://" + str(out), info=info, progress=False)
    for mip in range(1, scale_count(ws.size)):
        writer.add_scale((2**mip, 2**mip, 1), chunk_size=list(CHUNK_SIZE))
    writer.commit_info()
    for mip in range(scale_count(ws.size)):
        cv = CloudVolume("file://" + str(out), mip=mip, progress=False)
        cv[:, :, :] = pixels
        pixels = pixels[::2, ::2]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium")
    parser.add_argument("--world", type=Path, help="an already built world directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opencave-bench-image-") as tmp:
        world = args.world or Path(tmp) / "world"
        if args.world is None:
            build_world(world, size=args.size, progress=False)
        ws = WatershedVolume(world / "ws")
        start = time.perf_counter()
        build_image(world, Path(tmp) / "image")
        built = time.perf_counter() - start
        floor = floor_seconds(world, Path(tmp) / "floor")
        voxels = int(np.prod(ws.size))
        print(f"world {args.size}: {voxels / 1e6:.1f} M voxels, {scale_count(ws.size)} scales")
        print(f"EM image build {built:.1f} s ({voxels / built / 1e6:.1f} M voxels/s); floor {floor:.1f} s; ratio {built / floor:.1f}")


if __name__ == "__main__":
    main()
