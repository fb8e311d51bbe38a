"""The two classic small convnets, as ready-made (uncompiled) ``Sequential`` models.

Both are the architectures of Chollet's *Deep Learning with Python*: the MNIST digit classifier and the
small-dataset image classifier (cats vs dogs) trained from scratch with augmentation and dropout.
"""
from fastconv.layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D
from fastconv.models.sequential import Sequential

__all__ = ["mnist_convnet", "small_convnet"]


def mnist_convnet(input_shape=(28, 28, 1), num_classes=10, name="mnist_convnet"):
    """Conv 32 3x3 relu - MaxPool 2 - Conv 64 3x3 relu - MaxPool 2 - Conv 64 3x3 relu - Flatten - Dense 64 relu -
    Dense ``num_classes`` softmax (93,322 parameters for MNIST).

    Examples
    --------
    >>> from fastconv.models.zoo import mnist_convnet
    >>> model = mnist_convnet()
    >>> model.output_shape, model.count_params()
    ((None, 10), 93322)
    """
    return Sequential([
        Input(input_shape),
        Conv2D(32, 3, activation="relu"),
        MaxPooling2D(2),
        Conv2D(64, 3, activation="relu"),
        MaxPooling2D(2),
        Conv2D(64, 3, activation="relu"),
        Flatten(),
        Dense(64, activation="relu"),
        Dense(num_classes, activation="softmax"),
    ], name=name)


def small_convnet(input_shape=(150, 150, 3), num_classes=2, dropout=0.5, name="small_convnet"):
    """Conv 32 - MaxPool - Conv 64 - MaxPool - Conv 128 - MaxPool - Conv 128 - MaxPool (3x3 relu convs, 2x2 pools)
    - Flatten - Dropout - Dense 512 relu - Dense 1 sigmoid (two classes) or Dense ``num_classes`` softmax.

    Examples
    --------
    >>> from fastconv.models.zoo import small_convnet
    >>> small_convnet().output_shape, small_convnet(num_classes=3).output_shape
    ((None, 1), (None, 3))
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2; received num_classes={num_classes!r}")
    head = Dense(1, activation="sigmoid") if num_classes == 2 else Dense(num_classes, activation="softmax")
    return Sequential([
        Input(input_shape),
        Conv2D(32, 3, activation="relu"),
        MaxPooling2D(2),
        Conv2D(64, 3, activation="relu"),
        MaxPooling2D(2),
        Conv2D(128, 3, activation="relu"),
        MaxPooling2D(2),
        Conv2D(128, 3, activation="relu"),
        MaxPooling2D(2),
        Flatten(),
        Dropout(dropout),
        Dense(512, activation="relu"),
        head,
    ], name=name)
