"""A deterministic synthetic person re-identification dataset in Market-1501 format.

Each identity is a cartoon pedestrian whose clothing colours, top pattern, bag and build are fixed
across cameras; each camera adds its own tint, brightness and background; each image adds pose
(shift, scale, facing), occlusion and sensor noise. A small CNN learns it in a few CPU epochs and
bad hyperparameters visibly hurt, which is what a sweep demo needs.

Files are named as Market-1501's (``0002_c1s1_000451_03.jpg``); the gallery holds junk (``-1``) and
distractor (``0000``) images like the real set, so the real loader and protocol run on it unchanged.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PATTERNS = ("plain", "hstripes", "vstripes", "check")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; written to ``synthetic.json`` beside the images."""

    num_train_ids: int = 64
    num_test_ids: int = 48
    num_cameras: int = 4
    images_per_camera: int = 2
    image_size: tuple[int, int] = (64, 32)  # height, width
    seed: int = 0
    num_distractors: int = 40
    num_junk: int = 20


def _identity(rng: np.random.Generator) -> dict:
    def colour():
        return rng.integers(20, 236, size=3)

    return {
        "top": colour(),
        "top2": colour(),
        "bottom": colour(),
        "shoes": rng.integers(0, 120, size=3),
        "skin": np.array([255, 220, 180]) * rng.uniform(0.45, 1.0),
        "hair": rng.integers(0, 150, size=3),
        "pattern": PATTERNS[rng.integers(len(PATTERNS))],
        "bag": rng.integers(3),  # 0 none, 1 shoulder bag, 2 backpack
        "bag_colour": colour(),
        "build": rng.uniform(0.75, 1.1),  # body width factor
        "legs": rng.uniform(0.4, 0.55),  # fraction of height that is legs
    }


def _camera(rng: np.random.Generator) -> dict:
    return {
        "tint": rng.uniform(0.75, 1.25, size=3),
        "brightness": rng.uniform(-25, 25),
        "background": rng.integers(40, 200, size=3),
        "texture": rng.uniform(5, 30),
    }


def _render(person: dict | None, camera: dict, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = camera["background"]
    img += rng.normal(0, camera["texture"], size=(h // 4 + 1, w // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
    if person is not None:
        scale = rng.uniform(0.8, 1.0)
        ph, pw = h * scale, w * 0.55 * person["build"] * scale
        cx = w / 2 + rng.uniform(-0.12, 0.12) * w
        top_y = h * rng.uniform(0.02, 0.08) + (h - ph) * 0.5
        head_h = ph * 0.14
        legs_h = ph * person["legs"] * 0.7
        torso_top, torso_bottom = top_y + head_h, top_y + ph - legs_h
        feet = top_y + ph

        def box(y0, y1, x0, x1):
            return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)

        head = ((yy - (top_y + head_h / 2)) / (head_h / 2)) ** 2 + ((xx - cx) / (pw * 0.28)) ** 2 <= 1
        img[head] = person["skin"]
        img[box(top_y, top_y + head_h * 0.35, cx - pw * 0.28, cx + pw * 0.28)] = person["hair"]
        torso = box(torso_top, torso_bottom, cx - pw / 2, cx + pw / 2)
        pattern = person["pattern"]
        stripe = {"plain": np.zeros_like(torso), "hstripes": (yy // 3) % 2 == 0,
                  "vstripes": (xx // 3) % 2 == 0, "check": ((yy // 4) + (xx // 4)) % 2 == 0}[pattern]
        img[torso] = person["top"]
        img[torso & stripe] = person["top2"]
        gap = pw * 0.08
        for side in (-1, 1):
            leg_x0 = cx + (gap / 2 if side > 0 else -pw / 2 + pw * 0.1)
            leg = box(torso_bottom, feet - ph * 0.04, leg_x0, leg_x0 + pw * 0.4 - gap / 2)
            img[leg] = person["bottom"]
            img[box(feet - ph * 0.04, feet, leg_x0, leg_x0 + pw * 0.4)] = person["shoes"]
        facing = rng.choice((-1, 1))
        if person["bag"] == 1:
            bx = cx + facing * pw * 0.55
            img[box(torso_top + ph * 0.15, torso_top + ph * 0.32, bx - pw * 0.18, bx + pw * 0.18)] = person["bag_colour"]
        elif person["bag"] == 2:
            bx = cx - facing * pw * 0.5
            img[box(torso_top, torso_bottom - ph * 0.05, bx - pw * 0.12, bx + pw * 0.12)] = person["bag_colour"]
    if rng.uniform() < 0.25:  # occlusion by a random block
        oh, ow = int(h * rng.uniform(0.15, 0.35)), int(w * rng.uniform(0.3, 0.7))
        oy, ox = rng.integers(0, h - oh), rng.integers(0, w - ow)
        img[oy:oy + oh, ox:ox + ow] = rng.integers(0, 255, size=3)
    img = img * camera["tint"] + camera["brightness"]
    img += rng.normal(0, 8, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write(directory: Path, pid: int, cam: int, frame: int, idx: int, pixels: np.ndarray) -> None:
    name = f"{pid:04d}" if pid >= 0 else "-1"
    Image.fromarray(pixels).save(directory / f"{name}_c{cam + 1}s1_{frame:06d}_{idx:02d}.jpg", quality=92)


def _generate_into(root: Path, spec: SyntheticSpec) -> None:
    rng = np.random.default_rng(spec.seed)
    cameras = [_camera(rng) for _ in range(spec.num_cameras)]
    folders = {name: root / name for name in ("bounding_box_train", "bounding_box_test", "query")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    num_ids = spec.num_train_ids + spec.num_test_ids
    pids = rng.permutation(np.arange(1, 2 * num_ids + 1))[:num_ids]  # sparse ids like Market's
    is_train = rng.permutation(num_ids) < spec.num_train_ids  # train and test ids interleave
    frame = 0
    for index, pid in enumerate(sorted(int(p) for p in pids)):
        person = _identity(rng)
        query_cams = set(rng.permutation(spec.num_cameras)[:2].tolist())
        for cam, camera in enumerate(cameras):
            for shot in range(spec.images_per_camera):
                frame += 25
                pixels = _render(person, camera, spec.image_size, rng)
                if is_train[index]:
                    folder = folders["bounding_box_train"]
                elif shot == 0 and cam in query_cams:
                    folder = folders["query"]
                else:
                    folder = folders["bounding_box_test"]
                _write(folder, pid, cam, frame, shot + 1, pixels)
    for i in range(spec.num_distractors):  # background-only crops with id 0000
        cam = int(rng.integers(spec.num_cameras))
        _write(folders["bounding_box_test"], 0, cam, 100000 + i, 1, _render(None, cameras[cam], spec.image_size, rng))
    for i in range(spec.num_junk):  # junk (-1): fragments of people, ignored by the protocol
        cam = int(rng.integers(spec.num_cameras))
        pixels = _render(_identity(rng), cameras[cam], spec.image_size, rng)
        pixels[: spec.image_size[0] // 2] = cameras[cam]["background"]
        _write(folders["bounding_box_test"], -1, cam, 200000 + i, 1, pixels)
    (root / "synthetic.json").write_text(json.dumps(asdict(spec), indent=1))


def ensure_synthetic(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Generate the dataset at ``root`` unless it is already there with the same spec.

    Generation goes to a temporary sibling directory renamed into place, so parallel trials never
    see (or leave) a half-written dataset.
    """
    root = Path(root)
    stamp = root / "synthetic.json"
    wanted = json.loads(json.dumps(asdict(spec)))
    if stamp.is_file():
        found = json.loads(stamp.read_text())
        if found != wanted:
            from reidlib.errors import DatasetError

            raise DatasetError(str(root), f"holds a synthetic dataset made with {found}, not {wanted}; "
                                          "delete it or choose another DATASETS.ROOT_DIR")
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _generate_into(tmp / "data", spec)
        try:
            os.rename(tmp / "data", root)
        except OSError:
            if not stamp.is_file():  # somebody else's half-written directory: not ours to judge
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def main(argv: list[str] | None = None) -> None:
    """``python -m reidlib.data.synthetic DIR``: write the default synthetic dataset to DIR."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("root", help="dataset directory to create")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(ensure_synthetic(args.root, SyntheticSpec(seed=args.seed)))


if __name__ == "__main__":
    main()
