"""How ``hwnas train`` trains a child (:class:`TrainConfig`), torch-free, so the command line builds
its options from the fields (:mod:`hwnas.core.options`) without importing training."""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.core.errors import HwnasError
from hwnas.core.options import option, positive_float, positive_int

INITS = ("scratch", "supernet")  # where a child's weights start


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
    torch_device: str = option("cpu", help="cpu, cuda, cuda:N or auto")

    def check(self) -> None:
        if self.init not in INITS:
            raise HwnasError(f"init {self.init!r}: choose {' or '.join(INITS)}")
        if self.init == "supernet" and self.run is None:
            raise HwnasError("--init supernet needs --run RUN, the search folder whose supernet to slice")
