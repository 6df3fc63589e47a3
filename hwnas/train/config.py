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
BAD_IMAGES = ("stop", "skip")  # what an unreadable image does: stop the run naming it, or skip and count it
DATA_MODE_HELP = ("auto (default): in memory when the decoded images take at most a quarter of the free memory, "
                  "else streamed from disk (printed); memory; stream (image folders and JPEG archives)")  # fmt: skip
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
    torch_device: str = option("cpu", help="cpu, cuda, cuda:N or auto")

    def check(self) -> None:
        check_data_settings(self.data_mode, self.bad_images)
        if self.init not in INITS:
            raise HwnasError(f"init {self.init!r}: choose {' or '.join(INITS)}")
        if self.init == "supernet" and self.run is None:
            raise HwnasError("--init supernet needs --run RUN, the search folder whose supernet to slice")


def check_data_settings(data_mode: str, bad_images: str) -> None:
    if data_mode not in DATA_MODES:
        raise HwnasError(f"unknown data mode {data_mode!r}; choose {', '.join(DATA_MODES)}")
    if bad_images not in BAD_IMAGES:
        raise HwnasError(f"--bad-images {bad_images!r}: choose {' or '.join(BAD_IMAGES)}")
