"""How to run a convolution: which algorithm, and how to tile im2col's column buffer.

Tile sizes depend only on the problem's shape, never on the thread count, so every output element is computed
by the same sequence of operations whatever the number of threads (bit-identical results).
"""
import math

# Target size of one thread's column buffer: large enough for efficient GEMMs, small enough to stay near cache.
COLUMN_BUFFER_BYTES = 4 << 20
# Hard ceiling per thread, whatever the shape (the contract).
COLUMN_BUFFER_MAX_BYTES = 32 << 20
# Enough tiles that threads can share the work of even a single image.
MIN_TILES = 16
MIN_TILE_PIXELS = 32
# Channels per grad-weight work item in im2col.
GRAD_WEIGHT_CHANNEL_BLOCK = 64


def column_tile(bytes_per_pixel, n_pixels):
    """Output pixels per im2col tile."""
    if n_pixels <= 0:
        return 1
    tile = max(1, COLUMN_BUFFER_BYTES // max(1, bytes_per_pixel))
    tile = min(tile, max(math.ceil(n_pixels / MIN_TILES), MIN_TILE_PIXELS))
    tile = min(tile, max(1, COLUMN_BUFFER_MAX_BYTES // max(1, bytes_per_pixel)))
    return max(1, min(tile, n_pixels))


def _channels_per_group(problem):
    return problem.in_c // problem.groups


def _is_depthwise_like(problem):
    # Few input channels per group: the GEMMs would be too thin for BLAS to pay off.
    return _channels_per_group(problem) * problem.kernel_h * problem.kernel_w < 16


def choose_forward(problem, requested):
    if requested != "auto":
        return requested
    return "direct" if _is_depthwise_like(problem) else "im2col"


def choose_grad_input(problem, requested, n_threads):
    if requested != "auto":
        return requested
    # im2col's input gradient parallelises over images; direct over input rows.
    if _is_depthwise_like(problem) or problem.batch < n_threads:
        return "direct"
    return "im2col"


def choose_grad_weight(problem, requested):
    if requested != "auto":
        return requested
    if _is_depthwise_like(problem) or problem.out_c // problem.groups < 8:
        return "direct"
    return "im2col"


def is_pointwise(problem):
    """A 1x1, stride-1, unpadded convolution: the input already is the GEMM operand (no column buffer)."""
    return (problem.kernel_h == problem.kernel_w == 1 and problem.stride == (1, 1)
            and problem.padding == ((0, 0), (0, 0)))


def use_register_tiles(problem):
    """The tiled direct kernel vectorises over a group's output channels; with very few of them (depthwise)
    the plain direct kernel wastes fewer lanes."""
    return problem.out_c // problem.groups >= 4
