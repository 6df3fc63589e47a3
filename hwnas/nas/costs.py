"""What a search minimizes against its budget: LUT latency (ms), FLOPs (M) or parameters (M).

Each cost is a per-kernel cost plus a constant (a calibrated LUT's per-network term), so the
same object gives the exact differentiable expectation over the supernet's choices
(:meth:`SearchCost.expected`) and the cost of one architecture (:meth:`SearchCost.of`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from hwnas.errors import HwnasError
from hwnas.latency.expected import ExpectedCost
from hwnas.latency.kernels import Kernel
from hwnas.nas.arch import Architecture
from hwnas.nas.cost_tables import discrete_cost, expected_cost
from hwnas.nas.space import SearchSpace

COSTS = {"latency": "ms", "flops": "MFLOPs", "params": "Mparams"}


@dataclass
class SearchCost:
    name: str
    unit: str
    kernel_cost: Callable[[Kernel], float]
    offset: float = 0.0
    source: str = ""  # the LUT, for latency

    def expected(self, space: SearchSpace, dtype: torch.dtype = torch.float32) -> ExpectedCost:
        return expected_cost(space, self.kernel_cost, dtype=dtype, offset=self.offset)

    def of(self, arch: Architecture) -> float:
        return self.offset + discrete_cost(arch, self.kernel_cost)

    def smallest(self, space: SearchSpace) -> tuple[Architecture, float]:
        arch = space.extreme(self.kernel_cost, largest=False)
        return arch, self.of(arch)

    def largest(self, space: SearchSpace) -> tuple[Architecture, float]:
        arch = space.extreme(self.kernel_cost, largest=True)
        return arch, self.of(arch)

    def fmt(self, value: float) -> str:
        return f"{value:.4g} {self.unit}"


def make_cost(name: str, space: SearchSpace, lut: str | Path | None = None) -> SearchCost:
    """The cost ``name`` for ``space``; ``latency`` needs a LUT holding every kernel of the space."""
    if name not in COSTS:
        raise HwnasError(f"unknown cost {name!r}; choose one of {', '.join(COSTS)}")
    if name == "flops":
        return SearchCost(name, COSTS[name], lambda k: k.flops / 1e6)
    if name == "params":
        return SearchCost(name, COSTS[name], lambda k: k.params / 1e6)
    if lut is None:
        raise HwnasError("--cost latency needs a LUT: --lut FILE (make one with 'hwnas profile')")
    from hwnas.latency.predictor import LatencyPredictor

    predictor = LatencyPredictor.from_lut(lut)
    missing = predictor.table.missing(space.kernels())
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        device = predictor.table.meta.get("device", "DEVICE")
        space_arg = space.source if Path(space.source).is_file() else space.name
        raise HwnasError(
            f"{lut} lacks {len(missing)} kernel(s) of the space {space.name} ({shown}); add them with "
            f"'hwnas profile --space {space_arg} --device {device} --out {lut}'"
        )
    return SearchCost(name, COSTS[name], predictor.kernel_cost, predictor.offset, str(lut))
