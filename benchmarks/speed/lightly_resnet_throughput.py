"""Peer: lightly 1.6's BYOL training step (PyTorch, CPU) at ResNet-18 or ResNet-50, views in memory.

The network is byol-keras's `build_model` of the same arch, stem and size
(`bench_train.py`): torchvision's ResNet (v1.5, stride in the 3x3 conv) without
`fc`, with the CIFAR stem (3x3 conv, no max-pool) below 96 px and the ImageNet
stem (7x7/2 conv, max-pool) from 96 px up, as byol-keras's `stem="auto"`;
projector features->4096->256 and predictor 256->4096->256 built from lightly's
`ProjectionHead` blocks of `BYOLProjectionHead`, but with a bias in the hidden
Linear as Keras's Dense has (4,096 parameters per head, a negligible add; the
stock BYOL heads leave it out). The step is lightly's: `update_momentum` of
backbone and projector, `NegativeCosineSimilarity` both ways, SGD with momentum,
float32. It prints the parameter counts (`peer_lightly params ...`), times
`--steps` steps after one warm-up step and prints `peer_lightly imgs_per_s=..`.

torch honours `ONEDNN_MAX_CPU_ISA` (its convolutions run on oneDNN) and
`ATEN_CPU_CAPABILITY` (ATen's own vectorised kernels: default, avx2, avx512);
the header line shows the capability in force. Both must be set in the
environment before torch starts.

```bash
source ../shared/bench/lightly_env.sh
$PEER_PY benchmarks/speed/lightly_resnet_throughput.py --arch resnet18 --size 32 --batch 128
$PEER_PY benchmarks/speed/lightly_resnet_throughput.py --arch resnet50 --size 96 --batch 32 \
    --steps 3 --threads 2
$PEER_PY benchmarks/speed/lightly_resnet_throughput.py --arch resnet18 --count-only
```
"""

import argparse
import copy
import os
import time

import torch
import torchvision
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import ProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn

CIFAR_STEM_MAX_SIZE = 95  # byol_keras.nn.backbones: the ImageNet stem from 96 px up
FEATURES = {"resnet18": 512, "resnet50": 2048}


def backbone(arch: str, size: int) -> nn.Module:
    """torchvision's ResNet without `fc`, with the stem byol-keras picks for `size`."""
    model = getattr(torchvision.models, arch)()
    if size <= CIFAR_STEM_MAX_SIZE:
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def head(input_dim: int, hidden_dim: int = 4096, output_dim: int = 256) -> ProjectionHead:
    """BYOL's MLP head with a bias in the hidden Linear, as byol-keras's Dense has."""
    hidden = (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU(), True)
    return ProjectionHead([hidden, (hidden_dim, output_dim, None, None)])


class BYOL(nn.Module):
    """lightly's BYOL module: online backbone, projector, predictor, and momentum copies."""

    def __init__(self, arch: str, size: int):
        super().__init__()
        self.backbone = backbone(arch, size)
        self.projection_head = head(FEATURES[arch])
        self.prediction_head = head(256)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x):
        return self.prediction_head(self.projection_head(self.backbone(x)))

    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(FEATURES), default="resnet18")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    parser.add_argument("--count-only", action="store_true", help="print the counts and stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = BYOL(args.arch, args.size)
    # The trained parameters (BatchNorm's running statistics are buffers, not counted).
    print(
        f"peer_lightly params backbone={count(model.backbone)} "
        f"projector={count(model.projection_head)} predictor={count(model.prediction_head)}"
    )
    print(
        f"peer_lightly torch {torch.__version__}, {args.threads} threads, ATen capability "
        f"{torch.backends.cpu.get_cpu_capability()}, ONEDNN_MAX_CPU_ISA="
        f"{os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}, {args.arch} {args.size}px "
        f"batch {args.batch}"
    )
    if args.count_only:
        return
    criterion = NegativeCosineSimilarity()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9)
    x0 = torch.rand(args.batch, 3, args.size, args.size)
    x1 = torch.rand(args.batch, 3, args.size, args.size)

    def step() -> float:
        update_momentum(model.backbone, model.backbone_momentum, m=0.99)
        update_momentum(model.projection_head, model.projection_head_momentum, m=0.99)
        p0, z0 = model(x0), model.forward_momentum(x0)
        p1, z1 = model(x1), model.forward_momentum(x1)
        loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return float(loss.detach())

    step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    print(f"peer_lightly imgs_per_s={args.batch / seconds:.2f} batch={args.batch}")


if __name__ == "__main__":
    main()
