"""Cosine ("normalised") classifier and 1x1 mask predictor of Seesaw Loss (Wang et al.,
CVPR 2021; mmdetection's NormedLinear / NormedConv2d): logits = tau * cos(x, w) + b."""

import torch.nn.functional as F
from torch import nn

__all__ = ["NormedLinear", "NormedConv2d"]


class NormedLinear(nn.Linear):
    """(N, in) -> (N, out): tau * <x / |x|, W_k / |W_k|> + b_k."""

    def __init__(self, in_features, out_features, temperature=20.0, eps=1e-6):
        super().__init__(in_features, out_features)
        self.temperature, self.eps = temperature, eps
        nn.init.normal_(self.weight, std=0.01)
        nn.init.constant_(self.bias, 0)

    def forward(self, x):
        x = x / (x.norm(dim=1, keepdim=True) + self.eps)
        w = self.weight / (self.weight.norm(dim=1, keepdim=True) + self.eps)
        return self.temperature * F.linear(x, w) + self.bias


class NormedConv2d(nn.Conv2d):
    """1x1 conv on (N, in, H, W) whose per-pixel feature and per-class filter are L2-normalised
    over channels: tau * cos + b at every pixel."""

    def __init__(self, in_channels, out_channels, temperature=20.0, eps=1e-6):
        super().__init__(in_channels, out_channels, kernel_size=1)
        self.temperature, self.eps = temperature, eps
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        nn.init.constant_(self.bias, 0)

    def forward(self, x):
        x = x / (x.norm(dim=1, keepdim=True) + self.eps)
        w = self.weight / (self.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + self.eps)
        return self.temperature * F.conv2d(x, w) + self.bias.view(1, -1, 1, 1)
