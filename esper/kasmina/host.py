"""Hosts: the reference CNN (the anchor's 3-block net) and torchvision's ResNet-18."""
from __future__ import annotations

from torch import nn

from esper.kasmina.config import HostConfig


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class HostCNN(nn.Module):
    """conv-bn-relu blocks with 2× pooling between them, global pooling and a linear head.

    widths (8, 16, 32) give the ~6k-parameter reference host; (64, 128, 256) the ~374k one.
    Slots usually attach at `block0`, `block1`, `block2`.
    """

    def __init__(self, widths: tuple[int, int, int] = (8, 16, 32), num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.block0 = _block(in_channels, c1)
        self.pool0 = nn.MaxPool2d(2)
        self.block1 = _block(c1, c2)
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = _block(c2, c3)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c3, num_classes))

    def forward(self, x):
        x = self.pool0(self.block0(x))
        x = self.pool1(self.block1(x))
        return self.head(self.block2(x))


def build_host(cfg: HostConfig, in_channels: int = 3) -> nn.Module:
    if cfg.kind == "cnn":
        return HostCNN(cfg.widths, cfg.num_classes, in_channels)
    from torchvision.models import resnet18

    if in_channels != 3:
        raise ValueError(f"host.kind='resnet18' needs 3 input channels, the data has {in_channels}")
    return resnet18(num_classes=cfg.num_classes)
