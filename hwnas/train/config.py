"""How ``hwnas train`` trains a child (:class:`TrainConfig`), torch-free, so the command line builds
its options from the fields (:mod:`hwnas.core.options`) without importing training."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.core.errors import HwnasError
from hwnas.core.options import nonnegative_int, option, positive_float, positive_int

INITS = ("scratch", "supernet")  # where a child's weights start
# Where the images are while a run reads them (hwnas.train.data): decoded in memory, streamed from
# disk by DataLoader workers, or whichever the dataset's decoded size against free memory says.
DATA_MODES = ("auto", "memory", "stream")
# How training images are augmented (hwnas.train.batches): by their size (auto), or one recipe.
AUGMENTS = ("auto", "pad-crop", "resized-crop")
RECIPES = AUGMENTS[1:]
AUGMENT_HELP = (
    "auto (default): from 128-px images on, RandomResizedCrop + flip, and evaluation on the centre "
    "7/8 (ImageNet); below, a crop of the 1/8-padded image + flip (CIFAR); or name one"
)
# Autocast of the training forward passes; fp16 adds a gradient scaler.
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")
PRECISION_TRAIN_HELP = (
    "forward passes in fp32 (default), or under autocast in bf16 (CUDA, or a CPU with bf16 "
    "units) or fp16 (CUDA; with a gradient scaler); weights stay fp32"
)
BAD_IMAGES = ("stop", "skip")  # what an unreadable image does: stop the run naming it, or skip and count it
DATA_MODE_HELP = ("auto (default): in memory when the decoded images take at most a quarter of the free memory, "
                  "else streamed from disk (printed); memory; stream (image folders, JPEG archives, WebDataset shards)")  # fmt: skip
WORKERS_HELP = "processes decoding streamed images (default one per core, at most 8; 0: the main process)"
BAD_IMAGES_HELP = "an unreadable image: stop with its path (default), or skip it and report the count"


@dataclass
class TrainConfig:
    """How ``hwnas train`` trains a child; each field is also ``hwnas train --field-name``."""

    data: str = option("synthetic", help="as for hwnas search")
    init: str = option("scratch", choices=INITS,
                       help="start from fresh weights, or from the search's supernet sliced to this architecture "
                            "(--run)")  # fmt: skip
    run: str | None = option(None, metavar="RUN", help="the search folder, for --init supernet")
    limit: int | None = option(None, type=positive_int, help="use this many training images (class-balanced)")
    epochs: int = option(10, type=positive_int, help="training epochs")
    batch_size: int = option(64, type=positive_int, help="images per step")
    lr: float = option(0.05, type=positive_float, help="SGD learning rate, cosine decay")
    seed: int = option(0, type=int, help="initialization and batch order (default 0)")
    split_seed: int = option(0, type=int, help="which images are held out for validation; fixed across --seed "
                             "(default 0)")  # fmt: skip
    data_mode: str = option("auto", choices=DATA_MODES, help=DATA_MODE_HELP)
    workers: int | None = option(None, type=nonnegative_int, help=WORKERS_HELP)
    bad_images: str = option("stop", choices=BAD_IMAGES, help=BAD_IMAGES_HELP)
    augment: str = option("auto", choices=AUGMENTS, help=AUGMENT_HELP)
    precision_train: str = option("fp32", choices=TRAIN_PRECISIONS, help=PRECISION_TRAIN_HELP)
    torch_device: str = option("cpu", help="cpu, cuda, cuda:N or auto")

    def check(self) -> None:
        check_data_settings(self.data_mode, self.bad_images)
        check_training_settings(self.augment, self.precision_train)
        if self.init not in INITS:
            raise HwnasError(f"init {self.init!r}: choose {' or '.join(INITS)}")
        if self.init == "supernet" and self.run is None:
            raise HwnasError("--init supernet needs --run RUN, the search folder whose supernet to slice")


def check_data_settings(data_mode: str, bad_images: str) -> None:
    if data_mode not in DATA_MODES:
        raise HwnasError(f"unknown data mode {data_mode!r}; choose {', '.join(DATA_MODES)}")
    if bad_images not in BAD_IMAGES:
        raise HwnasError(f"--bad-images {bad_images!r}: choose {' or '.join(BAD_IMAGES)}")


def check_training_settings(augment: str, precision_train: str) -> None:
    if augment not in AUGMENTS:
        raise HwnasError(f"--augment {augment!r}: choose {', '.join(AUGMENTS)}")
    if precision_train not in TRAIN_PRECISIONS:
        raise HwnasError(f"--precision-train {precision_train!r}: choose {', '.join(TRAIN_PRECISIONS)}")
