"""How to run a convolution: which algorithm, and how to tile im2col's column buffer.

Tile sizes depend only on the problem's shape, never on the thread count, so every output element is computed
by the same sequence of operations whatever the number of threads (bit-identical results).
"""
import dataclasses
import functools
import math
import os

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


def is_depthwise(problem):
    """groups == in_channels (any channel multiplier): with algorithm="auto" conv_depthwise's kernels run it."""
    return problem.groups == problem.in_c and problem.in_c > 1


def _tile_lane_use(channels, itemsize):
    """Share of the tiled direct kernels' lanes that `channels` (the channels they vectorise over) fill: the
    tile's lanes come in whole blocks (32 float32 lanes at AVX-512 up to 32 channels), however few are needed."""
    from fastconv._kernels import conv_direct

    lanes = conv_direct.tile_shape(itemsize, max(1, channels))[1]
    return channels / (-(-channels // lanes) * lanes)


# The tiled kernels' lane blocks run below this share of real channels, or the plain direct kernel (under 4
# channels) runs, while im2col's GEMMs have enough to multiply: there im2col leads. Measured at 2 threads on AMD
# Zen 4 (session 17), ms direct / im2col, 3x3 kernels: forward 32 -> K channels on 64x28x28, K = 1: 15.2 / 1.5,
# 4: 4.9 / 3.3, 16: 5.1 / 4.5, 24: 5.0 / 5.9; 64 -> K on 32x74x74, K = 3: 191 / 21, 8: 31 / 23, 24: 33 / 40;
# input gradient of C -> 32 channels on 64x28x28, C = 1: 16.4 / 1.4 (the MNIST convnet's first layer), 4:
# 6.4 / 2.8, 24: 6.9 / 10.4; C -> 128 on 8x56x56, 16: 9.4 / 6.5, 24: 9.5 / 10.4. Where the other operand is
# thin (few input channels forward, few output channels backward) direct keeps the lead: a 7x7 stride-2 RGB stem
# with 16 filters 0.89 / 1.76, 16 -> 8 channels' input gradient 0.22 / 0.38.
FEW_CHANNEL_LANE_USE = 0.75
FEW_CHANNEL_MAX = 32
THIN_GEMM_CHANNELS = 8


def _few_channels_prefer_im2col(problem, lane_channels, other_channels, itemsize):
    """Whether im2col beats the direct kernels of an ungrouped convolution whose tiles vectorise over
    `lane_channels` (forward: output channels; input gradient: input channels) and reduce over `other_channels`.
    Never for 1x1 stride-1 convolutions (Dense layers run as them): the direct kernels' results do not depend on
    the batch size, so a model predicts the same bits in chunks (fastconv.dask) as in one call, where im2col's
    GEMM blocking follows the number of rows."""
    if (problem.groups != 1 or lane_channels >= FEW_CHANNEL_MAX or other_channels < THIN_GEMM_CHANNELS
            or is_pointwise(problem)):
        return False
    return lane_channels < 4 or _tile_lane_use(lane_channels, itemsize) < FEW_CHANNEL_LANE_USE


def choose_forward(problem, requested, itemsize=4):
    if requested != "auto":
        return requested
    if is_depthwise(problem):
        return "depthwise"
    if _few_channels_prefer_im2col(problem, problem.out_c, problem.in_c, itemsize):
        return "im2col"
    # The direct kernels work in NHWC. For channels_first input with very few channels (RGB), the layout
    # transposes around them cost more than im2col's GEMM, which writes NCHW directly, where the direct kernel
    # has only 16-byte vectors; with AVX2 or AVX-512 it leads anyway (_few_channel_nchw_prefers_im2col).
    if (not problem.channels_last and problem.in_c // problem.groups <= 4 and not _is_depthwise_like(problem)
            and _few_channel_nchw_prefers_im2col()):
        return "im2col"
    return "direct"


@functools.lru_cache(maxsize=None)  # the instruction set is chosen once, at import
def _few_channel_nchw_prefers_im2col():
    """Whether im2col beats the direct forward on channels_first input with 4 or fewer channels per group. Measured
    with 2 threads on an Intel Xeon, ms, im2col against direct (the direct one NHWC inside, NCHW output):
    resnet_stem 2.7 / 1.7 at AVX-512 and 2.8 / 2.5 at AVX2 but 4.3 / 8.0 at the baseline level; small_c1
    40 / 34, 40 / 35 and 57 / 79; MNIST's 28x28x1 -> 32 2.1 / 1.4, 2.1 / 1.4 and 2.5 / 2.7."""
    from fastconv._kernels import cpu_dispatch

    return cpu_dispatch.active_isa_name() == "baseline"


def choose_grad_input(problem, requested, n_threads, itemsize=4):
    if requested != "auto":
        return requested
    if is_depthwise(problem):
        return "depthwise"
    if _few_channels_prefer_im2col(problem, problem.in_c, problem.out_c, itemsize):
        return "im2col"
    if _is_depthwise_like(problem):
        return "direct"
    # With stride 1 the direct input gradient is a register-tiled convolution whose lanes run over the input
    # channels of a group; otherwise (or with very few of them) im2col's GEMMs do better.
    if problem.stride == (1, 1) and problem.in_c // problem.groups >= 4:
        return "direct"
    return "im2col"


@functools.lru_cache(maxsize=None)  # the instruction set is chosen once, at import
def _direct_grad_weight_max_channels():
    """Input channels per group up to which the tiled direct weight gradient beats im2col's GEMMs. Measured with
    2 threads: on AVX2 (an AMD EPYC) direct led up to 32 channels. On AVX-512 (an Intel Xeon), with the wide
    6 x 64 tile, it leads up to 256 (medians of 7 alternating rounds, GFLOP/s direct against im2col:
    vgg_conv3_2 145-151 against 134-150, NCHW 114-132 against 108-111; 1x1 256 -> 256 on 28x28, 130 against
    116; small_c4 151 against 120). At 512 it was level until the chunks grew to a quarter of the L2 (session
    9): then vgg_conv4_2 took 22.4-26.8 ms direct against 24.6-25.9 im2col (NCHW 24.3-34.1 against 27.3-35.2)
    and vgg_conv5_2 6.5-8.8 against 6.6-8.6 (NCHW 10.1-11.3 against 10.3-12.0), three runs each. On AVX2 too
    since session 18 (an AMD EPYC Zen 3, 4-way A/B, direct against im2col: at 1 thread +14-67% on every VGG
    row and small_c3/c4; at 2 threads vgg_conv1_2 +31%, vgg_conv2_2 +14%, vgg_conv5_2 +11%, small_c3 +7%,
    vgg_conv3_2 +2%, small_c4 -4%, mnist_c2 level). The baseline level (SSE2, 8 lanes) keeps 32: its tile ran at under half the speed of
    im2col's GEMMs, which the BLAS runs at the CPU's best level (vgg rows and small_c4, 2 threads)."""
    from fastconv._kernels import cpu_dispatch

    return 32 if cpu_dispatch.active_isa_name() == "baseline" else 512


def choose_grad_weight(problem, requested):
    if requested != "auto":
        return requested
    if is_depthwise(problem):
        return "depthwise"
    # With few input channels per group, im2col's per-tap GEMMs are too thin; the register-tiled direct kernel
    # keeps its tile full (measured: 5x on 3-channel layers; see the threshold's notes).
    if _is_depthwise_like(problem) or problem.in_c // problem.groups <= _direct_grad_weight_max_channels():
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


@functools.lru_cache(maxsize=512)  # (a layer asks for the same one every step)
def transposed_problem(problem):
    """The stride-1 convolution that computes `problem`'s input gradient from its output gradient."""
    from fastconv._problem import ConvProblem

    (top, _), (left, _) = problem.padding
    extent_h = (problem.kernel_h - 1) * problem.dilation[0]
    extent_w = (problem.kernel_w - 1) * problem.dilation[1]
    return ConvProblem(
        channels_last=True, batch=problem.batch, in_h=problem.out_h, in_w=problem.out_w, in_c=problem.out_c,
        out_h=problem.in_h, out_w=problem.in_w, out_c=problem.in_c,
        kernel_h=problem.kernel_h, kernel_w=problem.kernel_w, stride=(1, 1), dilation=problem.dilation,
        padding=((extent_h - top, 0), (extent_w - left, 0)), groups=problem.groups,
    )


# Largest zero-padded copy of the input the tiled weight gradient makes (a call's workspace stays under 64 MiB).
PADDED_INPUT_MAX_BYTES = 32 << 20


def pads_input_for_grad_weight(problem, tile_rows, itemsize):
    """Whether the tiled weight gradient should run on a zero-padded copy of the input. Where padding is
    reached its tiles take one tap's input channels each, so a group with fewer channels than a tile has rows
    leaves the rest idle (3 of 6 for RGB); on an unpadded input they run across taps, full. Measured, 2 threads:
    resnet_stem's weight gradient 2.5 -> 1.3 ms (the copy: 0.05 ms), 3 channels at 150x150, batch 32, padding 1:
    49 -> 18 ms."""
    (top, bottom), (left, right) = problem.padding
    if top == bottom == left == right == 0 or problem.in_c // problem.groups >= tile_rows:
        return False
    padded_elements = problem.batch * (problem.in_h + top + bottom) * (problem.in_w + left + right) * problem.in_c
    return padded_elements * itemsize <= PADDED_INPUT_MAX_BYTES


@functools.lru_cache(maxsize=512)
def without_padding(problem):
    """`problem` on its input zero-padded beforehand (_layout.zero_padded_nhwc): the same outputs, no padding."""
    (top, bottom), (left, right) = problem.padding
    return dataclasses.replace(problem, in_h=problem.in_h + top + bottom, in_w=problem.in_w + left + right,
                               padding=((0, 0), (0, 0)))


def _l2_cache_bytes(sysfs="/sys/devices/system/cpu/cpu0/cache"):
    """The data (or unified) L2 cache of a core, from Linux's sysfs; None where it cannot be read."""
    try:
        for entry in sorted(e for e in os.listdir(sysfs) if e.startswith("index")):  # (beside uevent, power)
            base = os.path.join(sysfs, entry)
            with open(os.path.join(base, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(base, "type")) as f:
                kind = f.read().strip()
            if level == "2" and kind in ("Data", "Unified"):
                with open(os.path.join(base, "size")) as f:
                    size = f.read().strip()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:].upper(), 1)
                return int(size.rstrip("KkMm")) * scale
    except (OSError, ValueError):
        return None
    return None


def _grad_weight_chunk_bytes(l2_bytes):
    """Bytes of input and output gradient one chunk of the tiled weight gradient streams: half a core's L2,
    between 256 KiB and 512 KiB. Measured against the earlier quarter of the L2 (at least 256 KiB): on a 1 MiB
    L2 (AMD Zen 5), 512 KiB ran 2-14% faster than 256 on every suite row at 2 threads; on a 2 MiB L2 (an Intel
    Xeon), 512 KiB ran 3-13% faster than 256 on the VGG rows and small_c4, level elsewhere."""
    return min(1 << 19, max(1 << 18, (l2_bytes or 0) // 2))


def _large_weight_bytes(l2_bytes):
    """Weight gradients over this size take chunks twice as large: every chunk reads and writes the whole
    gradient once, which then outweighs the activations (VGG conv4/conv5, 9 MiB: 1 MiB chunks 7-11% faster than
    512 KiB on Zen 5; conv3, 2.3 MiB: 2%; small_c4's 0.6 MiB 4% slower)."""
    return 2 * (l2_bytes or (1 << 20))


_L2_BYTES = _l2_cache_bytes()
GRAD_WEIGHT_CHUNK_BYTES = _grad_weight_chunk_bytes(_L2_BYTES)
LARGE_WEIGHT_BYTES = _large_weight_bytes(_L2_BYTES)


def _weight_bytes(problem, itemsize):
    """Bytes of the convolution's kernel (and of its weight gradient)."""
    return itemsize * problem.kernel_h * problem.kernel_w * problem.in_c // problem.groups * problem.out_c


def grad_weight_chunk_rows(problem, itemsize):
    """Output rows per chunk of the tiled weight-gradient kernel (shape-only, so results don't depend on
    threads): as many as fit the chunk's bytes, then evened out over the chunks that takes (on an Intel Xeon
    with a 2 MiB L2, 2 threads: vgg_conv3_2 +2%, small_c4 +1.5%, vgg_conv4_2 at 1 MiB chunks +5%)."""
    row_bytes = itemsize * (problem.out_w * problem.out_c + problem.stride[0] * problem.in_w * problem.in_c)
    weight_bytes = _weight_bytes(problem, itemsize)
    chunk_bytes = GRAD_WEIGHT_CHUNK_BYTES * (2 if weight_bytes > LARGE_WEIGHT_BYTES else 1)
    rows = problem.batch * problem.out_h
    largest = max(1, min(rows, chunk_bytes // row_bytes))
    return -(-rows // -(-rows // largest))  # 28 rows by at most 9: 4 x 7, not 3 x 9 + 1


def forward_unit_tiles(problem, tile_pixels, lanes, n_threads, itemsize=4):
    """Register tiles per work unit of the tiled direct forward. Each unit streams a whole block of packed
    weights, so units are made as large as possible (weights reused over more pixels) while still leaving
    ITEMS_PER_THREAD items (units x output-channel blocks) per thread, or FEW_ITEMS_PER_THREAD where the
    weights exceed LARGE_FORWARD_WEIGHT_BYTES. Results do not depend on it (each output is summed in the same
    order whatever unit it falls in), so it may follow the thread count."""
    total_tiles = -(-problem.batch * problem.out_h * problem.out_w // tile_pixels)
    k_blocks = problem.groups * (1 if forward_all_kblocks(problem, lanes, itemsize)
                                 else -(-(problem.out_c // problem.groups) // lanes))
    weight_bytes = _weight_bytes(problem, itemsize)
    items = FEW_ITEMS_PER_THREAD if weight_bytes > LARGE_FORWARD_WEIGHT_BYTES else ITEMS_PER_THREAD
    per_thread = total_tiles * k_blocks // (items * max(1, n_threads))
    largest = max(1, min(MAX_UNIT_PIXELS // tile_pixels, per_thread))
    # Units of equal size: 33 tiles as 17 + 16, not 16 + 16 + 1 (a near-empty unit unbalances the threads).
    n_units = -(-total_tiles // largest)
    return -(-total_tiles // n_units)


def forward_all_kblocks(problem, lanes, itemsize=4):
    """Whether each work item of the tiled direct forward runs every block of `lanes` output channels of its
    group (over input pointers laid out once), not one: where a group has several blocks and the whole kernel
    stays in a core's L2 (ALL_KBLOCKS_MAX_WEIGHT_BYTES). A tile's set-up costs about as much as a few taps of a
    few-channel layer, and at AVX2 (16 lanes) a 64-filter layer repeated it for 4 blocks: on Zen 3 at one thread
    a 7x7 RGB stem spent a quarter of its call outside the tile."""
    k_blocks = -(-(problem.out_c // problem.groups) // lanes)
    return k_blocks > 1 and _weight_bytes(problem, itemsize) <= ALL_KBLOCKS_MAX_WEIGHT_BYTES


def _valid_tap_fraction(in_size, out_size, kernel, stride, dilation, pad_before):
    """Share of (output position, kernel position) pairs along one axis whose input lies inside, not padding."""
    valid = 0
    for r in range(kernel):  # positions o with 0 <= o * stride - pad_before + r * dilation < in_size
        first = max(0, -(-(pad_before - r * dilation) // stride))
        last = min(out_size - 1, (in_size - 1 + pad_before - r * dilation) // stride)
        valid += max(0, last - first + 1)
    return valid / max(1, out_size * kernel)


def forward_tiles_over_batch(problem, tile_pixels):
    """Whether the tiled direct forward runs its tiles over the images at each output position (batch_inner):
    where padding is a large share of the taps (small padded images; a stride-1 input gradient is padded by
    the kernel extent - 1 - padding) and the batch fills tiles. Row-major tiles mix pixels that see different
    taps, and compute products of zeros for the padded ones: on the MNIST convnet's second input gradient
    (11x11 padded by 2, 72% of the taps inside) 29% of all products."""
    if problem.batch < BATCH_INNER_MIN_TILES * tile_pixels:
        return False
    (top, _), (left, _) = problem.padding
    inside = (_valid_tap_fraction(problem.in_h, problem.out_h, problem.kernel_h, problem.stride[0],
                                  problem.dilation[0], top)
              * _valid_tap_fraction(problem.in_w, problem.out_w, problem.kernel_w, problem.stride[1],
                                    problem.dilation[1], left))
    return inside < BATCH_INNER_MAX_INSIDE


BATCH_INNER_MIN_TILES = 2
BATCH_INNER_MAX_INSIDE = 0.85


# Work items per thread the tiled forward aims to offer (dynamic scheduling evens them out); and the largest
# unit, in output pixels (64 tiles of 14, or 149 of 6). Every tile streams its weight block whatever its unit,
# so smaller units cost little; 16 against 4 on Zen 5 at 2 threads: mnist_c2 forward +9%, resnet_stem +4%
# (the last items no longer leave a thread idle), the VGG rows and small_c3/c4 level, level at 1 thread.
ITEMS_PER_THREAD = 16
# Weights that do not stay in a core's L2 come from L3 once per unit: there fewer, larger units read them
# fewer times. 4 against 16 items per thread on an Intel Xeon (2 MiB L2), 2 threads, forward / input gradient:
# vgg_conv5_2 (9.4 MB) 229 -> 252 / 233 -> 263 GFLOP/s, vgg_conv4_2 +3% / +2%, vgg_conv3_2 (2.4 MB) +2.5%;
# level on vgg_conv2_2 and small_c3 (0.6, 0.3 MB); mnist_c2 and the RGB stem (74, 37 KB) lose 8% and 2.5%
# with 4, so they keep 16.
FEW_ITEMS_PER_THREAD = 4
LARGE_FORWARD_WEIGHT_BYTES = 1 << 20
MAX_UNIT_PIXELS = 896
ALL_KBLOCKS_MAX_WEIGHT_BYTES = 1 << 18
