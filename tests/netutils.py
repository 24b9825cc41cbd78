"""Networks for tests that score or export checkpoints without training one."""

import mindspore as ms
import numpy as np
from mindspore import nn, ops


def calibrated(net: nn.Cell, images: np.ndarray, seed: int) -> nn.Cell:
    """A random network made input-sensitive: random BN affine and unit-scale Dense weights, then BN
    moving statistics set to the statistics of ``images`` (one train-mode pass with momentum 1).
    Freshly initialised MobileNets give near-constant logits (input-dependent part ~1e-7)."""
    rng = np.random.default_rng(seed)
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            n = cell.num_features
            cell.gamma.set_data(ms.Tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)))
            cell.beta.set_data(ms.Tensor(rng.normal(0, 0.1, n).astype(np.float32)))
            cell.bn_train = ops.BatchNorm(is_training=True, epsilon=cell.eps, momentum=1.0, data_format=cell.format)
        elif isinstance(cell, nn.Dense):
            out, inp = cell.weight.shape
            cell.weight.set_data(ms.Tensor(rng.normal(0, 2 / np.sqrt(inp), (out, inp)).astype(np.float32)))
    net.set_train(True)
    net(ms.Tensor(images))
    net.set_train(False)
    return net
