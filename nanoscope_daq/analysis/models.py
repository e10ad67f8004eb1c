"""Segmentation networks: a 2-D U-Net and Sensor3D (a U-Net over a short slice sequence with bidirectional ConvLSTMs).

U-Net (Ronneberger et al., MICCAI 2015): ``depth`` levels of two 3x3 convolutions with
batch normalisation and ReLU, max-pooling down, 2x2 transposed convolutions up, skip
connections by concatenation; ``base`` channels at full resolution,
doubled per level.

Sensor3D (Novikov et al., "Deep sequential segmentation of organs in volumetric medical
scans", IEEE TMI 38:1207, 2019; the model Silveira et al. 2024 used through Dragonfly):
the U-Net's 2-D encoder and decoder run on every slice of a sequence of ``sequence``
adjacent slices (shared weights); a bidirectional convolutional LSTM runs along the
sequence on the bottleneck features, and a second one on the decoder's full-resolution
features, so that each slice's prediction sees its neighbours at both the coarsest and
the finest scale; the middle slice's features give the output. Why this design: the
inter-slice context tells a lacuna (a void that continues over several slices) from a
noise speck or a shade-off dip, at the cost of running the encoder and decoder on
``sequence`` slices per output slice plus the LSTMs (about 6x the U-Net's time for
``sequence`` = 3 on a CPU). The full-resolution LSTM has ``base / 2`` hidden channels to
keep that cost down.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """Two-convolution blocks with max-pooling between them; returns every level's features."""

    def __init__(self, cin: int, base: int, depth: int) -> None:
        super().__init__()
        widths = [base * 2**k for k in range(depth + 1)]
        self.blocks = nn.ModuleList([_block(cin, widths[0])] + [_block(a, b) for a, b in zip(widths, widths[1:])])
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.blocks[0](x)]
        for block in self.blocks[1:]:
            features.append(block(self.pool(features[-1])))
        return features


class Decoder(nn.Module):
    """Upsampling path with skip connections; returns full-resolution features of ``base`` channels."""

    def __init__(self, base: int, depth: int) -> None:
        super().__init__()
        widths = [base * 2**k for k in range(depth + 1)]
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2) for k in range(depth)])
        self.blocks = nn.ModuleList([_block(2 * widths[k], widths[k]) for k in range(depth)])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for k in reversed(range(len(self.blocks))):
            x = self.up[k](x)
            x = self.blocks[k](torch.cat([x, features[k]], dim=1))
        return x


class UNet2D(nn.Module):
    """2-D U-Net: (batch, 1, H, W) -> (batch, classes, H, W) logits; H and W divisible by 2**depth."""

    def __init__(self, classes: int, base: int = 6, depth: int = 3) -> None:
        super().__init__()
        self.sequence = 1
        self.encoder = Encoder(1, base, depth)
        self.decoder = Decoder(base, depth)
        self.head = nn.Conv2d(base, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[1] != 1:
            raise ValueError(f"UNet2D takes one slice per sample (batch, 1, H, W), got {tuple(x.shape)}")
        return self.head(self.decoder(self.encoder(x)))


class ConvLSTM(nn.Module):
    """One convolutional LSTM layer run along dim 1 of (batch, time, channels, H, W)."""

    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(cin + hidden, 4 * hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        b, t, _, h, w = x.shape
        state = x.new_zeros(b, self.hidden, h, w)
        cell = x.new_zeros(b, self.hidden, h, w)
        out = [None] * t
        for step in (reversed(range(t)) if reverse else range(t)):
            i, f, o, g = self.gates(torch.cat([x[:, step], state], dim=1)).chunk(4, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            state = torch.sigmoid(o) * torch.tanh(cell)
            out[step] = state
        return torch.stack(out, dim=1)


class BiConvLSTM(nn.Module):
    """Forward and backward ConvLSTMs along the slices, merged by a 1x1 convolution (residual)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.forward_lstm = ConvLSTM(channels, hidden)
        self.backward_lstm = ConvLSTM(channels, hidden)
        self.merge = nn.Conv2d(2 * hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        both = torch.cat([self.forward_lstm(x), self.backward_lstm(x, reverse=True)], dim=2)
        return x + self.merge(both.flatten(0, 1)).view(b, t, c, h, w)


class Sensor3D(nn.Module):
    """(batch, sequence, H, W) adjacent slices -> (batch, classes, H, W) logits of the middle slice."""

    def __init__(self, classes: int, base: int = 6, depth: int = 3, sequence: int = 3) -> None:
        super().__init__()
        if sequence < 1 or sequence % 2 == 0:
            raise ValueError(f"Sensor3D needs an odd number of slices (1, 3, 5, ...), got {sequence}")
        self.sequence = sequence
        self.encoder = Encoder(1, base, depth)
        self.bottleneck_lstm = BiConvLSTM(base * 2**depth, base * 2**depth // 2)
        self.decoder = Decoder(base, depth)
        self.output_lstm = BiConvLSTM(base, max(base // 2, 1))
        self.head = nn.Conv2d(base, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w = x.shape
        if t != self.sequence:
            raise ValueError(f"Sensor3D was built for {self.sequence} slices per sample, got {t}")
        features = self.encoder(x.reshape(b * t, 1, h, w))
        deepest = features[-1]
        features[-1] = self.bottleneck_lstm(deepest.view(b, t, *deepest.shape[1:])).flatten(0, 1)
        decoded = self.decoder(features)
        decoded = self.output_lstm(decoded.view(b, t, *decoded.shape[1:]))
        return self.head(decoded[:, t // 2])


def build_model(architecture: str, classes: int, base: int = 6, depth: int = 3, sequence: int = 3) -> nn.Module:
    """A fresh 'unet' or 'sensor3d' network."""
    if architecture == "unet":
        return UNet2D(classes, base, depth)
    if architecture == "sensor3d":
        return Sensor3D(classes, base, depth, sequence)
    raise ValueError(f"unknown architecture {architecture!r}; choose 'unet' or 'sensor3d'")
