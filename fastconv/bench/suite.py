"""The fixed layer and pool suites that fastconv's speed is judged on (issue: performance targets)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class ConvLayer:
    name: str
    batch: int
    in_c: int
    size: int
    out_c: int
    kernel: int
    stride: int
    pad: int

    @property
    def out_size(self):
        return (self.size + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def gflop(self):
        return 2 * self.batch * self.out_c * self.out_size ** 2 * self.in_c * self.kernel ** 2 / 1e9


@dataclass(frozen=True)
class PoolCase:
    name: str
    batch: int
    size: int
    channels: int
    pool: int
    stride: int
    padding: str

    @property
    def input_bytes(self):
        return 4 * self.batch * self.size * self.size * self.channels


CONV_LAYERS = [
    ConvLayer("vgg_conv1_2", 1, 64, 224, 64, 3, 1, 1),
    ConvLayer("vgg_conv2_2", 1, 128, 112, 128, 3, 1, 1),
    ConvLayer("vgg_conv3_2", 1, 256, 56, 256, 3, 1, 1),
    ConvLayer("vgg_conv4_2", 1, 512, 28, 512, 3, 1, 1),
    ConvLayer("vgg_conv5_2", 1, 512, 14, 512, 3, 1, 1),
    ConvLayer("small_c1", 32, 3, 150, 32, 3, 1, 0),
    ConvLayer("small_c2", 32, 32, 74, 64, 3, 1, 0),
    ConvLayer("small_c3", 32, 64, 36, 128, 3, 1, 0),
    ConvLayer("small_c4", 32, 128, 17, 128, 3, 1, 0),
    ConvLayer("mnist_c2", 64, 32, 13, 64, 3, 1, 0),
    ConvLayer("resnet_stem", 1, 3, 224, 64, 7, 2, 3),
]

QUICK_LAYERS = ["vgg_conv3_2", "small_c2", "mnist_c2", "resnet_stem"]

POOL_CASES = [
    PoolCase("pool_32x148x148x32", 32, 148, 32, 2, 2, "valid"),
    PoolCase("pool_1x224x224x64", 1, 224, 64, 2, 2, "valid"),
    PoolCase("pool_64x26x26x32", 64, 26, 32, 2, 2, "valid"),
    PoolCase("pool3s2_8x112x112x64", 8, 112, 64, 3, 2, "same"),
]
