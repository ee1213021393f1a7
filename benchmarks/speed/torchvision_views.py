"""BYOL view pairs per second from a torchvision pipeline: PIL decoding, transforms, DataLoader.

The peer side of `bench_views_vs_torchvision.py`, run by the lightly
environment's Python (`../shared/bench/lightly_env.sh` makes `$PEER_PY`: torch
CPU, torchvision, lightly), never by the project's. It reads the JPEG files
listed in `--files`, decodes each with PIL and makes two views with the
numbers of `--views` (the project's `view_params`, as JSON), in one of two
ways:

- `torchvision`: `torchvision.transforms` written out to mirror the project's
  views: `RandomResizedCrop(size, scale=crop_area, ratio=crop_aspect)`,
  `RandomHorizontalFlip`, `RandomApply([ColorJitter(b, c, s, h)], jitter_prob)`,
  `RandomGrayscale`, `RandomApply([GaussianBlur(kernel, blur_sigma)], blur_prob)`
  with the project's kernel (about 10% of the side, odd), `RandomSolarize(128)`,
  `ToTensor`;
- `lightly`: lightly's own `BYOLTransform` with the same numbers, what a user
  would pick; it blurs with PIL's `GaussianBlur(radius=sigma)` (no kernel size)
  and normalisation is switched off, as the project's views are not normalised.

A `DataLoader` (shuffled, `--workers` processes, persistent) batches the pairs;
the batches are timed after `--warmup` of them. The last line is JSON:
`{"pairs_per_s": ..., "transforms": ..., ...}`.

```bash
$PEER_PY benchmarks/speed/torchvision_views.py --files files.txt --views "$VIEWS_JSON" \
    --size 96 --batch-size 64 --workers 2 --steps 30 --warmup 5 --transforms torchvision
```
"""

import argparse
import json
import os
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T


def blur_kernel_size(size: int) -> int:
    """The project's blur kernel (byol_keras.augment.layers.default_blur_kernel_size)."""
    return max(3, int(round(0.1 * size)) | 1)


def torchvision_view(view: dict, size: int) -> T.Compose:
    """One view as torchvision transforms, with the project's numbers for that view."""
    if view["color"] != "torchvision":
        raise SystemExit(f"torchvision_views: colour {view['color']!r} has no torchvision twin")
    jitter = T.ColorJitter(view["brightness"], view["contrast"], view["saturation"], view["hue"])
    blur = T.GaussianBlur(blur_kernel_size(size), sigma=tuple(view["blur_sigma"]))
    return T.Compose(
        [
            T.RandomResizedCrop(
                size, scale=tuple(view["crop_area"]), ratio=tuple(view["crop_aspect"])
            ),
            T.RandomHorizontalFlip(view["flip_prob"]),
            T.RandomApply([jitter], p=view["jitter_prob"]),
            T.RandomGrayscale(view["grayscale_prob"]),
            T.RandomApply([blur], p=view["blur_prob"]),
            T.RandomSolarize(128, p=view["solarize_prob"]),
            T.ToTensor(),
        ]
    )


def lightly_views(views: list[dict], size: int):
    """lightly's `BYOLTransform` with the project's numbers for both views."""
    from lightly.transforms.byol_transform import (
        BYOLTransform,
        BYOLView1Transform,
        BYOLView2Transform,
    )

    def options(view: dict) -> dict:
        if tuple(view["crop_aspect"]) != (3 / 4, 4 / 3) or view["crop_area"][1] != 1.0:
            raise SystemExit("torchvision_views: lightly's crop takes min_scale only")
        return dict(
            input_size=size,
            cj_prob=view["jitter_prob"],
            cj_strength=1.0,
            cj_bright=view["brightness"],
            cj_contrast=view["contrast"],
            cj_sat=view["saturation"],
            cj_hue=view["hue"],
            min_scale=view["crop_area"][0],
            random_gray_scale=view["grayscale_prob"],
            gaussian_blur=view["blur_prob"],
            solarization_prob=view["solarize_prob"],
            sigmas=tuple(view["blur_sigma"]),
            hf_prob=view["flip_prob"],
            normalize=None,
        )

    return BYOLTransform(
        BYOLView1Transform(**options(views[0])), BYOLView2Transform(**options(views[1]))
    )


class PairFolder(Dataset):
    """JPEG files decoded by PIL, each turned into a pair of views (ImageFolder's loader)."""

    def __init__(self, paths: list[str], make_pair):
        self.paths, self.make_pair = paths, make_pair

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with open(self.paths[index], "rb") as file:
            image = Image.open(file).convert("RGB")
        return self.make_pair(image)


def cpu_seconds(workers: list[int]) -> float:
    """CPU seconds used so far by this process and the worker processes `workers`."""
    total = time.process_time()
    for pid in workers:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", required=True, help="a text file, one JPEG path a line")
    parser.add_argument("--views", required=True, help="the two views' parameters, JSON")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--transforms", choices=("torchvision", "lightly"), default="torchvision")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    with open(args.files) as listing:
        paths = [line.strip() for line in listing if line.strip()]
    views = json.loads(args.views)
    if args.transforms == "lightly":
        make_pair = lightly_views(views, args.size)
    else:
        first, second = (torchvision_view(view, args.size) for view in views)

        def make_pair(image):
            return first(image), second(image)

    loader = DataLoader(
        PairFolder(paths, make_pair),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )

    def batches():
        while True:  # epochs, as a repeated tf.data pipeline runs
            yield from loader

    stream = batches()
    for _ in range(args.warmup):  # starts the workers and fills their queues
        next(stream)
    workers = [worker.pid for worker in getattr(loader._iterator, "_workers", [])]
    cpu_start = cpu_seconds(workers)
    start = time.perf_counter()
    for _ in range(args.steps):
        view1, view2 = next(stream)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(workers) - cpu_start
    assert view1.shape == view2.shape == (args.batch_size, 3, args.size, args.size)
    print(
        json.dumps(
            {
                "pairs_per_s": args.steps * args.batch_size / seconds,
                "transforms": args.transforms,
                "seconds": seconds,
                "cpu_ms_per_pair": 1000 * cpu / (args.steps * args.batch_size),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
