"""ExecuTorch: a PyTorch module as a ``.pte`` program, lowered to the XNNPACK delegate (fp32, int8).

``torch.export`` captures the model, ``to_edge_transform_and_lower`` hands every subgraph the
XNNPACK partitioner accepts to XNNPACK, and the rest stays on ExecuTorch's portable operators.
int8: PyTorch 2 export post-training quantization with ExecuTorch's ``XNNPACKQuantizer``
(per-channel symmetric int8 weights, int8 activations, calibrated on training images); input and
output stay float, quantized and dequantized inside the program. What was delegated and what was
not is counted per operator (:class:`Delegation`) for the model card.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from hwnas.core.errors import HwnasError
from hwnas.core.extras import require
from hwnas.core.formats import FORMAT_PRECISIONS
from hwnas.core.quiet import quiet

PTE_PRECISIONS = FORMAT_PRECISIONS["pte"]
DELEGATE = "XnnpackBackend"
# not operators: a tuple access of a delegate's outputs
_NOT_OPS = {"getitem"}


@dataclass
class Delegation:
    """How much of the program runs in the delegate: node counts, and per operator (delegated,
    not delegated)."""

    delegate: str
    subgraphs: int
    delegated: int
    not_delegated: int
    by_operator: dict[str, tuple[int, int]] = field(default_factory=dict)

    def not_delegated_ops(self) -> dict[str, int]:
        return {op: n for op, (_, n) in sorted(self.by_operator.items()) if n}

    def to_dict(self) -> dict[str, object]:
        return {"delegate": self.delegate, "delegated_subgraphs": self.subgraphs,
                "delegated_operators": self.delegated, "not_delegated_operators": self.not_delegated,
                "not_delegated": self.not_delegated_ops(),
                "by_operator": {op: {"delegated": d, "not_delegated": n}
                                for op, (d, n) in sorted(self.by_operator.items())}}  # fmt: skip


def pte_bytes(
    model: nn.Module,
    input_shape: tuple[int, ...],
    precision: str = "fp32",
    calibration: Sequence[np.ndarray] = (),
) -> tuple[bytes, Delegation]:
    """The ``.pte`` program of ``model`` (NCHW ``input_shape``) and what XNNPACK took of it."""
    require("pte", "ExecuTorch export (--format pte)")
    if precision not in PTE_PRECISIONS:
        raise HwnasError(f"ExecuTorch export has no {precision}; choose one of {', '.join(PTE_PRECISIONS)}")
    sample = torch.randn(input_shape)
    model = model.eval()
    with quiet():  # torchao and XNNPACK log to stderr on import
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    try:
        with quiet(), torch.no_grad():
            if precision == "int8":
                model = _int8(model, sample, calibration)
            exported = torch.export.export(model, (sample,))
            edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
            delegation = _delegation(edge.exported_program().graph_module)
            program = edge.to_executorch()
    except HwnasError:
        raise
    except Exception as exc:  # torch.export or the lowering refused an operator
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HwnasError(f"ExecuTorch cannot lower this model ({type(exc).__name__}: {first[:300]}); "
                         "export it as onnx or tflite instead") from None  # fmt: skip
    return bytes(program.buffer), delegation


def _int8(model: nn.Module, sample: torch.Tensor, calibration: Sequence[np.ndarray]) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not calibration:
        raise HwnasError("int8 needs calibration images: give --data (training images)")
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (sample,)).module(), quantizer)
    for x in calibration:
        prepared(torch.from_numpy(x))
    converted: nn.Module = convert_pt2e(prepared)
    return converted


def _delegation(graph_module: torch.fx.GraphModule) -> Delegation:
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    by = {op: (int(b.delegated), int(b.non_delegated))
          for op, b in info.delegation_by_operator.items() if op not in _NOT_OPS}  # fmt: skip
    return Delegation(DELEGATE, int(info.num_delegated_subgraphs), sum(d for d, _ in by.values()),
                      sum(n for _, n in by.values()), by)  # fmt: skip
