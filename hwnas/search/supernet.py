"""The DMasking supernet (FBNetV2): one network of widest layers, choices as masks.

Every searchable layer of a :class:`SearchSpace` becomes one :class:`SuperLayer` built at its
widest (max in, mid and out channels, largest kernel). Its choices are Gumbel-softmax weights
``g = softmax((alpha + G) / tau)`` over three independent factors:

* out channels: ``y * sum_k g_k m_k`` with ``m_k = [1]*c_k + [0]*(C_max - c_k)``: one conv, one
  feature map, whatever the number of choices;
* expansion: the same kind of mask on the mid channels, ``mid = make_divisible(c_in * e)``; the
  in-channels are a choice of the previous layer, so the mask is averaged over its weights too;
* op (block type): the IR ops of a layer share one set of weights, Single-Path style (one 5x5
  depthwise kernel whose centre is the 3x3 option; SE and hard-swish mixed in by the weight of
  the ops that have them), and ``skip`` is a separate path, so depth is searched:
  ``y = (1 - g_skip) * IR(x) + g_skip * skip(x)``. With ``paths="explicit"`` every (op,
  expansion, out channels) is its own full block on the widest input instead (FBNet's DNAS, one
  conv per channel choice): kept only as the baseline of the memory benchmark. With
  ``paths="masked-se"`` the IR ops that have an SE gate share one set of weights among
  themselves, apart from the ops without one (two Single-Path blocks per layer, mixed by the SE
  ops' total weight; a child runs only its own), so a child without SE never runs convolutions
  trained behind a gate (why, and what it measured: docs/notebook/search-protocol.md, "Eighth run").

A residual (or a skip that is an identity) exists in a child only where its in-channels equal its
out-channels; the supernet adds it weighted by the probability of that event under the current
choice weights. A *tied* layer (a later layer of a ``tied_channels`` stage) has no channel factor
of its own: it takes its input's channel weights as its out-channel weights, and its residual
always exists. Its option probabilities (:meth:`SuperLayer.option_probs`) are then conditional on
the stage's width: ``P(op) P(expansion)``, the same for every channel choice, which is the form
:mod:`hwnas.search.cost` and :mod:`hwnas.search.select` expect for tied layers.

Input resolution is one choice for the whole network. A weight step draws one resolution with a hard Gumbel sample, resizes the batch to it (and scales the logits by the
sample's weight: value 1, a straight-through gradient to ``alpha``). An architecture step uses
:meth:`SuperNet.resolution_loss` instead: the batch split into one group per resolution and the
group losses weighted by ``softmax(alpha)``, so the resolution logits learn which resolution has
the lower loss. Both keep memory and compute those of one batch at one resolution; the design brief allows
this instead of the paper's subsample-and-scatter (docs/design.md, "Method notes").

The architecture distribution of the cost is ``softmax(alpha)`` of each factor (no noise); its
option probabilities (op x expansion x out channels, in the space's option order) feed
:class:`hwnas.search.cost.ExpectedCost`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hwnas.core.errors import HwnasError
from hwnas.models.layers import init_weights
from hwnas.search.config import PATHS
from hwnas.spaces.arch import Architecture
from hwnas.spaces.ops import mid_channels, parse_op, se_channels
from hwnas.spaces.space import Layer, Option, SearchSpace

Weights = dict[str, torch.Tensor]


def width_masks(choices: Sequence[int], width: int) -> torch.Tensor:
    """``[len(choices), width]``: row ``k`` is 1 on the first ``choices[k]`` channels."""
    idx = torch.arange(width)
    return (idx[None, :] < torch.tensor(list(choices))[:, None]).float()


def _pad_channels(x: torch.Tensor, width: int) -> torch.Tensor:
    return x if x.shape[1] == width else F.pad(x, (0, 0, 0, 0, 0, width - x.shape[1]))


def _mask(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return x * m.view(1, -1, 1, 1)


def _act(x: torch.Tensor, hs: torch.Tensor | float) -> torch.Tensor:
    """``hs * hardswish(x) + (1 - hs) * relu(x)``, skipping a branch whose weight is exactly 0 or 1."""
    if isinstance(hs, float):
        return F.hardswish(x) if hs == 1.0 else F.relu(x)
    return hs * F.hardswish(x) + (1 - hs) * F.relu(x)


class Factor(nn.Module):
    """The choice logits of one factor of one layer (``alpha``, starting uniform at zero)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(n))

    def probs(self) -> torch.Tensor:
        return self.alpha.softmax(0)

    def sample(self, tau: float, hard: bool = False) -> torch.Tensor:
        """Gumbel-softmax over the logits (straight-through one-hot with ``hard``). The noise is drawn
        from torch's CPU generator whatever device the logits are on, so a search draws the same
        noise on a CPU and a GPU, and a checkpoint (which stores that generator's state) resumes the
        same stream on a GPU; on a CPU this is what ``F.gumbel_softmax`` draws."""
        noise = -torch.empty(self.alpha.shape, dtype=self.alpha.dtype).exponential_().log()
        soft = ((self.alpha + noise.to(self.alpha.device)) / tau).softmax(-1)
        if not hard:
            return soft
        one_hot = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
        return one_hot - soft.detach() + soft


class IRWeights(nn.Module):
    """The weights of one Single-Path IR block (a ``masked-se`` layer's SE ops keep theirs here)."""

    pw: nn.Conv2d
    pw_bn: nn.BatchNorm2d
    dw: nn.Conv2d
    dw_bn: nn.BatchNorm2d
    se_reduce: nn.Conv2d
    se_expand: nn.Conv2d
    pwl: nn.Conv2d
    pwl_bn: nn.BatchNorm2d


class SuperLayer(IRWeights):
    """One searchable layer at its widest; see the module docstring. An IR layer holds its block's
    weights itself (the names of :class:`IRWeights`), so checkpoints keep their keys."""

    same: torch.Tensor
    se_keep: torch.Tensor
    out_masks: torch.Tensor
    mid_masks: torch.Tensor
    pw_identity: torch.Tensor
    se_masks: torch.Tensor
    kernel_rings: torch.Tensor

    def __init__(
        self, layer: Layer, in_choices: tuple[int, ...], explicit: bool = False, se_apart: bool = False
    ) -> None:
        super().__init__()
        self.layer = layer
        self.in_choices = in_choices
        self.cin = max(in_choices)
        self.cout = max(layer.channels)
        self.ops = [parse_op(o) for o in layer.ops]
        kinds = {op.kind for op in self.ops if op.kind != "skip"}
        if len(kinds) > 1:
            raise HwnasError(f"layer {layer.index}: the supernet cannot mix {sorted(kinds)} ops in one layer")
        self.kind = kinds.pop() if kinds else "skip"
        self.skip_index = next((i for i, op in enumerate(self.ops) if op.kind == "skip"), None)
        self.expansions = layer.expansions if self.kind in ("ir", "ir_pool") else (1.0,)
        self.stride = layer.stride
        self.explicit = explicit and self.kind != "ir_pool"  # the head has one choice: masked either way
        gates = {bool(op.gate) for op in self.ops if op.kind == "ir"}
        self.se_apart = se_apart and not self.explicit and gates == {True, False}  # both kinds to keep apart
        if self.se_apart:  # row g: which ops each block serves (g = 0: the ops without SE, 1: with)
            keep = [[float(op.kind != "skip" and bool(op.gate) == bool(g)) for op in self.ops] for g in (0, 1)]
            self.register_buffer("se_keep", torch.tensor(keep), persistent=False)
        self.tied = layer.tied
        if self.tied and in_choices != layer.channels:
            raise HwnasError(f"layer {layer.index}: a tied layer needs its input's channel choices {in_choices}")
        self.op_factor = Factor(len(self.ops))
        self.e_factor = Factor(len(self.expansions))
        self.c_factor = Factor(1 if self.tied else len(layer.channels))  # tied: the stage's first layer decides
        self.register_buffer("out_masks", width_masks(layer.channels, self.cout), persistent=False)
        # in-channels == out-channels, per (in choice, out choice): where residuals and identity skips exist
        same = torch.tensor([[float(ci == co) for co in layer.channels] for ci in in_choices])
        self.register_buffer("same", same if self.stride == 1 else torch.zeros_like(same), persistent=False)
        self.kmax = max(op.k for op in self.ops)
        mids = [[mid_channels(ci, e) for e in self.expansions] for ci in in_choices]
        self.mid = max(max(row) for row in mids) if self.kind in ("ir", "ir_pool") else 0
        if self.kind in ("ir", "ir_pool"):
            self.register_buffer(
                "mid_masks", torch.stack([width_masks(row, self.mid) for row in mids]), persistent=False
            )
            pw_identity = torch.tensor(
                [[float(m == ci) for m in row] for ci, row in zip(in_choices, mids, strict=True)]
            )
            self.register_buffer("pw_identity", pw_identity, persistent=False)
            self.has_pw_identity = bool(pw_identity.any())  # some child has no expand conv here
        if self.kind == "ir" and any(op.gate for op in self.ops):
            se_mids = [[se_channels(m) for m in row] for row in mids]
            self.se_mid = max(max(row) for row in se_mids)
            self.register_buffer("se_masks", torch.stack([width_masks(row, self.se_mid) for row in se_mids]),
                                 persistent=False)  # fmt: skip
        self._build()

    # --- modules -------------------------------------------------------------------------
    def _build(self) -> None:
        if self.explicit:
            self._build_explicit()
            return
        if self.kind == "conv":
            self.conv = nn.Conv2d(self.cin, self.cout, self.kmax, self.stride, self.kmax // 2, bias=False)
            self.bn = nn.BatchNorm2d(self.cout)
        elif self.kind == "ir":
            self._build_ir(self, gate=any(op.gate for op in self.ops) and not self.se_apart)
            if self.se_apart:  # the SE ops' own block, beside this one (which the ops without SE use)
                self.se_path = IRWeights()
                self._build_ir(self.se_path, gate=True)
        elif self.kind == "ir_pool":
            self.pw = nn.Conv2d(self.cin, self.mid, 1, bias=False)
            self.pw_bn = nn.BatchNorm2d(self.mid)
            self.head = nn.Conv2d(self.mid, self.cout, 1, bias=False)
        if self.skip_index is not None and (self.stride != 1 or (not self.tied and bool((self.same == 0).any()))):
            self.skip_conv = nn.Conv2d(self.cin, self.cout, 1, self.stride, bias=False)
            self.skip_bn = nn.BatchNorm2d(self.cout)
        if self.kmax > 1:
            k, c = self.kmax, self.kmax // 2
            # ring[s]: the taps of a kernel of size s (centred) within the largest kernel
            sizes = sorted({op.k for op in self.ops if op.kind != "skip"})
            rings = torch.zeros(len(sizes), k, k)
            for i, s in enumerate(sizes):
                rings[i, c - s // 2 : c + s // 2 + 1, c - s // 2 : c + s // 2 + 1] = 1.0
            self.kernel_sizes = sizes
            self.register_buffer("kernel_rings", rings, persistent=False)

    def _build_ir(self, into: SuperLayer | IRWeights, gate: bool) -> None:
        into.pw = nn.Conv2d(self.cin, self.mid, 1, bias=False)
        into.pw_bn = nn.BatchNorm2d(self.mid)
        into.dw = nn.Conv2d(self.mid, self.mid, self.kmax, self.stride, self.kmax // 2, groups=self.mid, bias=False)
        into.dw_bn = nn.BatchNorm2d(self.mid)
        if gate:
            into.se_reduce = nn.Conv2d(self.mid, self.se_mid, 1)
            into.se_expand = nn.Conv2d(self.se_mid, self.mid, 1)
        into.pwl = nn.Conv2d(self.mid, self.cout, 1, bias=False)
        into.pwl_bn = nn.BatchNorm2d(self.cout)

    def ir_weights(self, gated: bool) -> SuperLayer | IRWeights:
        """The module holding the pw / dw / SE / pwl weights that an IR op with (``gated``) or
        without an SE gate uses: this layer, or with ``se_apart`` its ``se_path`` for SE ops."""
        return self.se_path if gated and self.se_apart else self

    def _build_explicit(self) -> None:
        from hwnas.models.blocks import make_block

        if self.kind not in ("ir", "conv", "skip"):
            raise HwnasError("the explicit-path baseline covers conv, ir and skip layers only")
        if self.tied:
            raise HwnasError("the explicit-path baseline does not cover tied_channels stages; use paths='masked'")
        # FBNet's DNAS: one full block per (op, expansion, out channels), each on the widest input
        self.paths = nn.ModuleDict()
        for op in self.ops:
            for e in self.expansions if op.kind == "ir" else (1.0,):
                for co in self.layer.channels:
                    self.paths[f"{op.name}|{e}|{co}".replace(".", "_")] = make_block(op, self.cin, co, self.stride, e)

    # --- choice weights --------------------------------------------------------------------
    def option_probs(self) -> torch.Tensor:
        """P(option) for every option of the layer, in ``layer.options`` order (no noise)."""
        return self.option_weights(self.op_factor.probs(), self.e_factor.probs(), self.c_factor.probs())

    def option_weights(self, p_op: torch.Tensor, p_e: torch.Tensor, p_c: torch.Tensor) -> torch.Tensor:
        names = [op.name for op in self.ops]
        if self.tied:  # conditional on the stage's width: every channel choice gets P(op) P(expansion)
            p_c = torch.ones(len(self.layer.channels), dtype=p_op.dtype, device=p_op.device)
        out = []
        for o in self.layer.options:
            w = p_op[names.index(o.op)] * p_c[self.layer.channels.index(o.c)]
            if parse_op(o.op).uses_expansion:
                w = w * p_e[self.expansions.index(o.e)]
            out.append(w)
        return torch.stack(out)

    def argmax(self, cin: int) -> Option:
        """The most probable option after a layer with ``cin`` out channels (a tied layer keeps them)."""
        op = self.ops[int(self.op_factor.alpha.argmax())]
        c = cin if self.tied else self.layer.channels[int(self.c_factor.alpha.argmax())]
        e = self.expansions[int(self.e_factor.alpha.argmax())] if op.uses_expansion else 1.0
        return Option(op.name, c, e)

    def sample(self, tau: float) -> Weights:
        return {"op": self.op_factor.sample(tau), "e": self.e_factor.sample(tau), "c": self.c_factor.sample(tau)}

    def one_hot(self, option: Option) -> Weights:
        """The weights that select ``option`` (the supernet then computes that child's layer)."""
        dev = self.c_factor.alpha.device
        e = self.expansions.index(option.e) if parse_op(option.op).uses_expansion else 0
        n_c = len(self.layer.channels)
        # a tied layer's width comes with its input: its channel factor has one choice
        c = torch.ones(1) if self.tied else F.one_hot(torch.tensor(self.layer.channels.index(option.c)), n_c).float()
        return {
            "op": F.one_hot(torch.tensor([op.name for op in self.ops].index(option.op)), len(self.ops)).float().to(dev),
            "e": F.one_hot(torch.tensor(e), len(self.expansions)).float().to(dev),
            "c": c.to(dev),
        }

    # --- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, q_in: torch.Tensor, g: Weights) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: input at the previous layer's widest channels, masked; ``q_in``: the previous
        layer's out-channel weights. Returns the masked output and this layer's out-channel weights."""
        if self.explicit:
            return self._forward_explicit(x, q_in, g), g["c"]
        g_op, g_e = g["op"], g["e"]
        g_c = q_in if self.tied else g["c"]  # a tied layer keeps its input's width: its residual always exists
        if self.tied:
            p_same = x.new_ones(())
        else:
            p_same = q_in @ self.same @ g_c if self.stride == 1 else x.new_zeros(())
        g_skip = g_op[self.skip_index] if self.skip_index is not None else None
        if self.kind == "skip":
            y = self._skip(x, p_same)
        else:
            ir_share = 1 - g_skip if g_skip is not None else torch.ones((), device=x.device)
            cond = g_op / ir_share.clamp_min(1e-6)  # op weights within the non-skip ops
            if g_skip is not None:
                cond = cond * (torch.arange(len(self.ops), device=x.device) != self.skip_index)
            hs = self._share(cond, lambda op: op.act == "hswish")
            if self.kind == "conv":
                y = _act(
                    self.bn(F.conv2d(x, self._kernel(self.conv.weight, cond), None, self.stride, self.kmax // 2)), hs
                )
            elif self.kind == "ir":
                y = self._ir(x, q_in, g_e, cond, hs, p_same)
            else:
                y = self._ir_pool(x, q_in, g_e, hs)
            if g_skip is not None:
                y = ir_share * y + g_skip * self._skip(x, p_same)
        return _mask(y, g_c @ self.out_masks), g_c

    def _share(self, cond: torch.Tensor, pred: object) -> torch.Tensor | float:
        flags = [float(pred(op)) if op.kind != "skip" else 0.0 for op in self.ops]  # type: ignore[operator]
        if all(f == 1.0 or op.kind == "skip" for f, op in zip(flags, self.ops, strict=True)):
            return 1.0
        if not any(flags):
            return 0.0
        return (cond * torch.tensor(flags, device=cond.device)).sum()

    def _kernel(self, weight: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if len(self.kernel_sizes) == 1:
            return weight
        # weight of each tap: the share of ops whose kernel covers it
        share = torch.stack([torch.as_tensor(self._share(cond, lambda op, s=s: op.k == s), device=weight.device,
                                             dtype=weight.dtype) for s in self.kernel_sizes])  # fmt: skip
        return weight * torch.einsum("s,skl->kl", share, self.kernel_rings)

    def _skip(self, x: torch.Tensor, p_same: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "skip_conv"):
            return _pad_channels(x, self.cout)
        conv = F.relu(self.skip_bn(self.skip_conv(x)))
        if self.stride != 1:
            return conv
        return p_same * _pad_channels(x, self.cout) + (1 - p_same) * conv

    def _ir(self, x: torch.Tensor, q_in: torch.Tensor, g_e: torch.Tensor, cond: torch.Tensor,
            hs: torch.Tensor | float, p_same: torch.Tensor) -> torch.Tensor:  # fmt: skip
        se_share = self._share(cond, lambda op: bool(op.gate))
        if not self.se_apart:
            y = self._ir_block(self, x, q_in, g_e, cond, hs, se_share)
        else:
            # each block sees the op weights within its own ops; a share of exactly 0 skips a block
            # (a child runs one), a soft mixture runs both
            y = x.new_zeros(())
            for gated, share in ((False, 1 - se_share), (True, se_share)):
                if not isinstance(share, torch.Tensor) and share == 0.0:
                    continue
                if isinstance(share, torch.Tensor) and not share.requires_grad and float(share) == 0.0:
                    continue
                sub = cond * self.se_keep[int(gated)] / torch.as_tensor(share, device=cond.device).clamp_min(1e-6)
                y = y + share * self._ir_block(self.ir_weights(gated), x, q_in, g_e, sub,
                                               self._share(sub, lambda op: op.act == "hswish"), float(gated))  # fmt: skip
        if self.stride == 1:
            y = y + p_same * _pad_channels(x, self.cout)
        return y

    def _ir_block(self, m: SuperLayer | IRWeights, x: torch.Tensor, q_in: torch.Tensor, g_e: torch.Tensor, cond: torch.Tensor,
                  hs: torch.Tensor | float, se_share: torch.Tensor | float) -> torch.Tensor:  # fmt: skip
        """One Single-Path IR block on the weights in ``m``, without its residual."""
        mid_mask = torch.einsum("i,e,iem->m", q_in, g_e, self.mid_masks)
        p_id = q_in @ self.pw_identity @ g_e  # P(mid == in): the child has no expand conv
        h = _act(m.pw_bn(m.pw(x)), hs)
        if self.has_pw_identity:
            h = p_id * _pad_channels(x, self.mid) + (1 - p_id) * h
        h = _mask(h, mid_mask)
        h = _mask(_act(m.dw_bn(F.conv2d(h, self._kernel(m.dw.weight, cond), None, self.stride,
                                        self.kmax // 2, 1, self.mid)), hs), mid_mask)  # fmt: skip
        if hasattr(m, "se_reduce") and not (isinstance(se_share, float) and se_share == 0.0):
            hsig = self._share(cond, lambda op: op.gate == "hsigmoid")
            s = _act(m.se_reduce(F.adaptive_avg_pool2d(h, 1)), hs)
            s = _mask(s, torch.einsum("i,e,iem->m", q_in, g_e, self.se_masks))
            s = m.se_expand(s)
            gate = hsig * F.hardsigmoid(s) + (1 - hsig) * torch.sigmoid(s) if not isinstance(hsig, float) else (
                F.hardsigmoid(s) if hsig == 1.0 else torch.sigmoid(s))  # fmt: skip
            h = (
                h * gate
                if isinstance(se_share, float) and se_share == 1.0
                else se_share * (h * gate) + (1 - se_share) * h
            )
        return m.pwl_bn(m.pwl(h))

    def _ir_pool(
        self, x: torch.Tensor, q_in: torch.Tensor, g_e: torch.Tensor, hs: torch.Tensor | float
    ) -> torch.Tensor:
        mid_mask = torch.einsum("i,e,iem->m", q_in, g_e, self.mid_masks)
        p_id = q_in @ self.pw_identity @ g_e
        h = _act(self.pw_bn(self.pw(x)), hs)
        if self.has_pw_identity:
            h = p_id * _pad_channels(x, self.mid) + (1 - p_id) * h
        h = F.adaptive_avg_pool2d(_mask(h, mid_mask), 1)
        return _act(self.head(h), hs)

    def _forward_explicit(self, x: torch.Tensor, q_in: torch.Tensor, g: Weights) -> torch.Tensor:
        names = [op.name for op in self.ops]
        out = None
        for key, block in self.paths.items():
            name, e, co = key.split("|")
            op_i = names.index(name)
            w = g["op"][op_i] * g["c"][self.layer.channels.index(int(co))]
            if self.ops[op_i].kind == "ir":
                w = w * g["e"][self.expansions.index(float(e.replace("_", ".")))]
            y = _pad_channels(block(x), self.cout) * w
            out = y if out is None else out + y
        assert out is not None
        return out


class SuperNet(nn.Module):
    """The supernet of a search space: ``forward(x, tau)`` samples choice weights and runs."""

    def __init__(self, space: SearchSpace, paths: str = "masked") -> None:
        super().__init__()
        if paths not in PATHS:
            raise ValueError(f"paths must be one of {', '.join(PATHS)}, got {paths!r}")
        self.space = space
        in_choices: tuple[int, ...] = (space.in_channels,)
        layers = []
        for layer in space.layers:
            layers.append(SuperLayer(layer, in_choices, explicit=paths == "explicit", se_apart=paths == "masked-se"))
            in_choices = layer.channels
        self.layers = nn.ModuleList(layers)
        self.res_factor = Factor(len(space.resolutions))
        self.classifier = nn.Linear(max(in_choices), space.num_classes)
        init_weights(self)

    def super_layers(self) -> list[SuperLayer]:
        return [layer for layer in self.layers if isinstance(layer, SuperLayer)]

    # --- parameters ------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name.endswith("alpha")]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.endswith("alpha")]

    # --- distributions ---------------------------------------------------------------------
    def choice_probs(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(resolution probabilities, option probabilities per layer): the inputs of the expected cost."""
        return self.res_factor.probs(), [layer.option_probs() for layer in self.super_layers()]

    def derive(self, name: str = "") -> Architecture:
        """The argmax architecture."""
        res = self.space.resolutions[int(self.res_factor.alpha.argmax())]
        options: list[Option] = []
        for layer in self.super_layers():
            options.append(layer.argmax(options[-1].c if options else self.space.in_channels))
        return self.space.architecture(res, options, name=name)

    # --- forward ---------------------------------------------------------------------------
    def resolution_loss(self, x: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
        """The cross-entropy of a batch as the expectation over resolutions, for architecture steps.

        The batch is split into one group per resolution, each group runs at its resolution, and
        the loss is ``sum_r softmax(alpha)_r * CE_r``: its gradient moves probability toward the
        resolution whose group has the lower loss, which is the question the search asks (a
        straight-through scale on one drawn resolution's logits rewards confident logits
        instead). Compute stays that of one batch. The other factors' Gumbel weights are drawn
        per group as usual."""
        n = len(self.space.resolutions)
        if n == 1 or x.shape[0] < n:
            return F.cross_entropy(self(x, tau, resolution=self.space.resolutions[0] if n == 1 else None), y)
        p = self.res_factor.probs()
        parts = [F.cross_entropy(self(xr, tau, resolution=r), yr)
                 for r, xr, yr in zip(self.space.resolutions, x.tensor_split(n), y.tensor_split(n), strict=True)]  # fmt: skip
        return (p * torch.stack(parts)).sum()

    def forward(
        self, x: torch.Tensor, tau: float = 1.0, resolution: int | None = None, arch: Architecture | None = None
    ) -> torch.Tensor:
        """Logits for a batch. Draws a resolution (hard Gumbel, straight-through) and choice weights
        unless ``arch`` fixes them all (then the supernet computes that child network)."""
        if arch is not None:
            resolution = arch.resolution
            options = [Option(b.op, b.c, b.e) for b in arch.blocks]
        if resolution is None:
            g_res = self.res_factor.sample(tau, hard=True)
            r = int(g_res.argmax())
            scale = g_res[r]
            resolution = self.space.resolutions[r]
        else:
            scale = None
        if x.shape[-1] != resolution or x.shape[-2] != resolution:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
        q = torch.ones(1, device=x.device)
        for i, layer in enumerate(self.super_layers()):
            x, q = layer(x, q, layer.one_hot(options[i]) if arch is not None else layer.sample(tau))
        logits = self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits * scale if scale is not None else logits
