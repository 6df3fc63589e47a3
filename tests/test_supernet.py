"""The DMasking supernet: children computed exactly through masks, distributions, gradients."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hwnas.models.builder import build_model
from hwnas.search.slicing import slice_child
from hwnas.search.supernet import SuperNet
from hwnas.spaces import get_space
from hwnas.spaces.ops import parse_op
from hwnas.spaces.space import Option


def _randomize_bn(net: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so a wrong channel slice shows."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.05)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize(("space_name", "paths"), [("tiny", "masked"), ("cifar", "masked"), ("tiny", "masked-se"),
                                                  ("cifar", "masked-se")])  # fmt: skip
def test_sliced_child_equals_the_supernet_with_one_hot_choices(space_name: str, paths: str) -> None:
    torch.manual_seed(0)
    space = get_space(space_name)
    net = SuperNet(space, paths=paths)
    _randomize_bn(net, 1)
    net.eval()
    rng = random.Random(0)
    for arch in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(6))]:
        child = slice_child(net, arch).eval()
        x = torch.randn(4, 3, arch.resolution, arch.resolution)
        with torch.no_grad():
            want, got = child(x), net(x, arch=arch)
        assert want.std(0).mean() > 1e-4  # the output depends on the input
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        # the sliced child has exactly the architecture's shapes
        assert [p.shape for p in child.parameters()] == [p.shape for p in build_model(arch).parameters()]


def test_out_channel_mask_zeroes_the_channels_not_chosen() -> None:
    space = get_space("cifar")
    net = SuperNet(space).train()
    layer = net.layers[4]  # a searchable inverted-residual layer with channel choices (32, 48)
    assert layer.layer.channels == (32, 48)
    x = torch.randn(2, layer.cin, 16, 16)
    for c in layer.layer.channels:
        g = layer.one_hot(Option(layer.layer.ops[0], c, layer.expansions[0]))
        y, q = layer(x, torch.tensor([0.0, 1.0]), g)
        assert y.shape[1] == 48
        assert torch.count_nonzero(y[:, c:]) == 0 and torch.count_nonzero(y[:, :c]) > 0
        assert torch.equal(q, g["c"])


def test_option_probabilities_are_the_product_of_the_factors() -> None:
    space = get_space("cifar")
    net = SuperNet(space)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    with torch.no_grad():
        res, probs = net.choice_probs()
    assert float(res.sum()) == pytest.approx(1.0)
    for layer, p in zip(net.layers, probs, strict=True):
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-6)
        p_op, p_e, p_c = (f.alpha.detach().softmax(0) for f in (layer.op_factor, layer.e_factor, layer.c_factor))
        for o, value in zip(layer.layer.options, p.tolist(), strict=True):
            want = float(p_op[layer.layer.ops.index(o.op)] * p_c[layer.layer.channels.index(o.c)])
            if parse_op(o.op).uses_expansion:
                want *= float(p_e[layer.expansions.index(o.e)])
            assert value == pytest.approx(want, rel=1e-6)


def test_every_architecture_logit_gets_a_gradient() -> None:
    torch.manual_seed(0)
    space = get_space("tiny")
    net = SuperNet(space).train()
    x, y = torch.randn(8, 3, 24, 24), torch.randint(0, space.num_classes, (8,))
    loss = nn.functional.cross_entropy(net(x, tau=1.0), y)
    loss.backward()
    for name, p in net.named_parameters():
        if name.endswith("alpha") and p.numel() > 1:
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert {n for n, _ in net.named_parameters() if n.endswith("alpha")} == {
        n for n, p in net.named_parameters() if any(p is q for q in net.arch_parameters())
    }
    assert not {id(p) for p in net.arch_parameters()} & {id(p) for p in net.weight_parameters()}


def test_resolution_is_sampled_hard_with_a_straight_through_gradient() -> None:
    torch.manual_seed(0)
    space = get_space("tiny")
    net = SuperNet(space).train()
    seen = set()
    for _ in range(20):
        x = torch.randn(2, 3, 24, 24)
        net.zero_grad()
        sizes: list[int] = []
        hook = net.layers[0].register_forward_pre_hook(lambda m, a, sizes=sizes: sizes.append(a[0].shape[-1]))
        net(x, tau=1.0).sum().backward()
        hook.remove()
        seen.add(sizes[0])
        assert net.res_factor.alpha.grad is not None and float(net.res_factor.alpha.grad.abs().sum()) > 0
    assert seen == set(space.resolutions)


def test_architecture_steps_learn_which_resolution_has_the_lower_loss() -> None:
    """resolution_loss = sum_r p_r CE_r over one group per resolution, so d/d alpha_r is
    p_r (CE_r - sum_s p_s CE_s): negative (more probability) exactly for the lower-loss groups."""
    space = get_space("tiny")
    net = SuperNet(space).train()
    with torch.no_grad():
        net.res_factor.alpha.copy_(torch.tensor([0.3, -0.2])[: len(space.resolutions)])
    x, y = torch.randn(8, 3, 24, 24), torch.randint(0, space.num_classes, (8,))
    torch.manual_seed(5)
    loss = net.resolution_loss(x, y, tau=1.0)
    net.zero_grad()
    loss.backward()
    torch.manual_seed(5)  # the same Gumbel draws, group by group
    with torch.no_grad():
        ce = torch.stack([torch.nn.functional.cross_entropy(net(xr, 1.0, resolution=r), yr)
                          for r, xr, yr in zip(space.resolutions, x.chunk(2), y.chunk(2), strict=True)])  # fmt: skip
    p = net.res_factor.alpha.detach().softmax(0)
    assert float(loss) == pytest.approx(float((p * ce).sum()), rel=1e-5)
    expected = p * (ce - (p * ce).sum())
    assert torch.allclose(net.res_factor.alpha.grad, expected, atol=1e-6)
    assert int(net.res_factor.alpha.grad.argmin()) == int(ce.argmin())


def test_explicit_paths_baseline_holds_one_block_per_choice() -> None:
    space = get_space("tiny")
    masked, explicit = SuperNet(space), SuperNet(space, paths="explicit")
    layer = explicit.layers[1]
    n_paths = sum(len(layer.expansions) if op.kind == "ir" else 1 for op in layer.ops) * len(layer.layer.channels)
    assert len(layer.paths) == n_paths
    assert sum(p.numel() for p in explicit.weight_parameters()) > 2 * sum(p.numel() for p in masked.weight_parameters())
    # with one-hot choices it computes the child whose block it selects
    explicit.eval()
    arch = space.sample(3)
    x = torch.randn(2, 3, arch.resolution, arch.resolution)
    with torch.no_grad():
        out = explicit(x, arch=arch)
    assert out.shape == (2, space.num_classes) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="masked"):
        slice_child(explicit, arch)


def test_one_hot_covers_every_option() -> None:
    space = get_space("tiny")
    net = SuperNet(space)
    for layer in net.layers:
        for o in layer.layer.options:
            g = layer.one_hot(o)
            assert all(float(v.sum()) == 1.0 for v in g.values())
            p = layer.option_weights(g["op"], g["e"], g["c"])
            assert float(p[layer.layer.options.index(o)]) == 1.0 and float(p.sum()) == 1.0


def test_soft_op_weights_are_renormalised_over_the_non_skip_ops() -> None:
    """out(a, b, s) = (1 - s) out(a / (1 - s), b / (1 - s), 0) + s out(0, 0, 1): the inverted-residual
    part sees its ops' weights relative to each other, whatever weight the skip path takes."""
    from hwnas.search.supernet import SuperNet

    torch.manual_seed(0)
    net = SuperNet(get_space("tiny")).eval()
    layer = next(lay for lay in net.super_layers() if lay.skip_index is not None and len(lay.ops) > 2)
    skip = layer.skip_index
    x = torch.randn(2, layer.cin, 12, 12)
    q_in = torch.softmax(torch.randn(layer.same.shape[0]), 0)  # the previous layer's out-channel weights
    g_e = torch.softmax(torch.randn(len(layer.expansions)), 0)
    g_c = torch.softmax(torch.randn(len(layer.layer.channels)), 0)

    def out(op_weights: list[float]) -> torch.Tensor:
        return layer(x, q_in, {"op": torch.tensor(op_weights), "e": g_e, "c": g_c})[0]

    others = [i for i in range(len(layer.ops)) if i != skip]
    w, s = [0.5, 0.3][: len(others)], 0.2
    full = [0.0] * len(layer.ops)
    for i, v in zip(others, w, strict=True):
        full[i] = v
    full[skip] = s
    renorm = [0.0] * len(layer.ops)
    for i, v in zip(others, w, strict=True):
        renorm[i] = v / (1 - s)
    only_skip = [0.0] * len(layer.ops)
    only_skip[skip] = 1.0
    with torch.no_grad():
        assert torch.allclose(out(full), (1 - s) * out(renorm) + s * out(only_skip), atol=1e-5)


def _search_folder(folder, net: SuperNet, config: dict) -> None:
    from hwnas.train.checkpoints import rng_states, write_search_checkpoint

    state = {"config": config, "epoch": 1, "net": net.state_dict(), "w_opt": {}, "w_sched": {}, "a_opt": {},
             "lambda": 0.0, "metrics": [], "probs": [], "timing": {}, "rng": rng_states()}  # fmt: skip
    write_search_checkpoint(folder / "checkpoint.safetensors", state)


@pytest.mark.parametrize("paths", ["masked", "masked-se", None])
def test_a_child_sliced_from_a_search_folder_equals_the_saved_supernet(tmp_path, paths) -> None:
    """What ``train --init supernet`` starts from, read in process (the CLI test runs it in a child)."""
    from hwnas.search.slicing import sliced_child_of_run

    torch.manual_seed(1)
    space = get_space("tiny")
    net = SuperNet(space, paths=paths or "masked")
    _randomize_bn(net, 2)
    _search_folder(tmp_path, net, {"space": "tiny", **({"paths": paths} if paths else {})})
    net.eval()
    for arch in (space.sample(3), space.largest()):
        child = sliced_child_of_run(tmp_path, arch).eval()
        x = torch.randn(2, 3, arch.resolution, arch.resolution)
        with torch.no_grad():
            want, got = net(x, arch=arch), child(x)
        assert want.std(0).mean() > 1e-4
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_search_folder_that_cannot_give_a_child_names_why(tmp_path) -> None:
    from hwnas.core.errors import HwnasError
    from hwnas.search.slicing import sliced_child_of_run

    tiny = SuperNet(get_space("tiny"))
    arch = get_space("tiny").sample(0)
    for config, words in [({"space": 3}, "corrupt content (config.space or config.paths)"),
                          ({"space": "tiny", "paths": "weird"}, "corrupt content (config.space or config.paths)"),
                          ({"space": "cifar"}, "the supernet weights do not fit space 'cifar'")]:  # fmt: skip
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        _search_folder(folder, tiny, config)
        with pytest.raises(
            HwnasError, match=r"checkpoint\.safetensors: " + words.replace("(", r"\(").replace(")", r"\)")
        ):
            sliced_child_of_run(folder, arch)
    folder = tmp_path / "explicit"
    folder.mkdir()
    _search_folder(folder, SuperNet(get_space("tiny"), paths="explicit"), {"space": "tiny", "paths": "explicit"})
    with pytest.raises(
        HwnasError, match=r"^init from the supernet: weights can be sliced from the masked supernet only"
    ):
        sliced_child_of_run(folder, arch)
    folder = tmp_path / "ok"
    folder.mkdir()
    _search_folder(folder, tiny, {"space": "tiny"})
    with pytest.raises(HwnasError, match=r"^init from the supernet: .* is not an architecture of the space tiny"):
        sliced_child_of_run(folder, get_space("cifar").sample(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hard", [False, True])
def test_gumbel_noise_comes_from_the_cpu_generator_a_checkpoint_stores(hard: bool, dtype: torch.dtype) -> None:
    """On a GPU, noise drawn on the logits' device used the CUDA generator, which a checkpoint does
    not store: a resumed GPU search drew other noise than an uninterrupted one (seen on an H200)."""
    from torch.nn import functional as F

    from hwnas.search.supernet import Factor

    factor = Factor(5).to(dtype)
    with torch.no_grad():
        factor.alpha.copy_(torch.tensor([0.3, -1.0, 2.0, 0.0, 0.5]))
    torch.manual_seed(11)
    got = factor.sample(0.7, hard=hard)
    torch.manual_seed(11)  # the library's own sampler, on the CPU, from the same generator state
    want = F.gumbel_softmax(factor.alpha, tau=0.7, hard=hard)
    assert torch.equal(got, want)
    torch.manual_seed(11)  # by hand: softmax((alpha - log Exp(1)) / tau), drawn from the CPU generator
    soft = ((factor.alpha.detach() - torch.empty(5, dtype=dtype).exponential_().log()) / 0.7).softmax(0)
    assert torch.allclose(got.detach(), F.one_hot(soft.argmax(), 5).to(dtype) if hard else soft)
    if not hard:
        torch.manual_seed(11)
        assert torch.equal(factor.sample(0.7), got)  # soft unless asked
    state = torch.get_rng_state()  # what a checkpoint keeps: the same state gives the same draw
    first = factor.sample(0.7, hard=hard)
    torch.set_rng_state(state)
    assert torch.equal(factor.sample(0.7, hard=hard), first)
    (got * torch.arange(5.0)).sum().backward()
    assert factor.alpha.grad is not None and factor.alpha.grad.abs().sum() > 1e-3  # straight-through when hard


# --- from the fifth mutation run: the argmax architecture, the resolution paths, the resize --------------
def test_the_argmax_architecture_takes_every_factors_largest_logit() -> None:
    """SuperNet.derive against the logits read by hand: op, channels and expansion per layer (a
    skip has no expansion: 1.0), the resolution, and the name given."""
    space = get_space("cifar")
    net = SuperNet(space)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    want_options = []
    for layer, sl in zip(space.layers, net.super_layers(), strict=True):
        op = layer.ops[int(sl.op_factor.alpha.argmax())]
        c = layer.channels[int(sl.c_factor.alpha.argmax())]
        e = layer.expansions[int(sl.e_factor.alpha.argmax())] if parse_op(op).uses_expansion else 1.0
        want_options.append(Option(op, c, e))
    assert any(o.op == "skip" for o in want_options) and any(o.e != 1.0 for o in want_options)
    want_res = space.resolutions[int(net.res_factor.alpha.argmax())]
    got = net.derive(name="argmax")
    assert got == space.architecture(want_res, want_options) and got.name == "argmax"
    assert [Option(b.op, b.c, b.e) for b in got.blocks] == want_options and got.resolution == want_res
    assert net.derive().name == ""


def test_a_drawn_resolution_scales_the_logits_by_its_straight_through_one() -> None:
    """forward with no resolution: the logits of the drawn resolution, times the hard sample's 1 (whose
    gradient reaches the resolution logits), as computed step by step from the same random stream."""
    torch.manual_seed(0)
    space = get_space("tiny")
    net = SuperNet(space).train()
    x, y = torch.randn(4, 3, 24, 24), torch.tensor([0, 1, 2, 3]) % space.num_classes
    for seed in range(6):
        torch.manual_seed(seed)
        net.zero_grad()
        out = net(x, 0.7)
        F.cross_entropy(out, y).backward()
        grad = net.res_factor.alpha.grad.clone()
        torch.manual_seed(seed)  # by hand: the resolution draw first, then the layers' draws at that resolution
        net.zero_grad()
        g_res = net.res_factor.sample(0.7, hard=True)
        r = int(g_res.argmax())
        logits = net(x, 0.7, resolution=space.resolutions[r])
        assert torch.equal(out, logits)  # times exactly 1
        F.cross_entropy(logits * g_res[r], y).backward()
        assert torch.allclose(grad, net.res_factor.alpha.grad) and grad.abs().sum() > 0


def test_the_default_temperature_is_one() -> None:
    net = SuperNet(get_space("tiny")).train()
    x = torch.randn(2, 3, 24, 24)
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(1)
    assert torch.equal(a, net(x, 1.0))


def test_an_input_of_another_shape_is_resized_bilinearly_to_the_resolution() -> None:
    """A non-square input whose height already matches must still be resized (both sides are checked)."""
    net = SuperNet(get_space("tiny")).eval()
    x = torch.randn(2, 3, 24, 32)
    arch = get_space("tiny").architecture(24, [layer.options[0] for layer in get_space("tiny").layers])
    resized = F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(net(x, arch=arch), net(resized, arch=arch), atol=1e-6)
    assert not torch.allclose(net(x[..., :24], arch=arch), net(resized, arch=arch), atol=1e-4)


def test_the_resolution_loss_on_a_batch_too_small_to_split_is_one_drawn_resolutions_loss() -> None:
    """Fewer images than resolutions: one ordinary forward (resolution drawn) instead of groups."""
    space = get_space("tiny")
    net = SuperNet(space).train()
    x, y = torch.randn(1, 3, 24, 24), torch.tensor([2])
    torch.manual_seed(3)
    got = net.resolution_loss(x, y, 0.6)
    torch.manual_seed(3)
    assert torch.equal(got, F.cross_entropy(net(x, 0.6), y))


def test_the_resolution_loss_of_a_one_resolution_space_runs_at_that_resolution() -> None:
    import dataclasses

    space = dataclasses.replace(get_space("tiny"), resolutions=(16,))
    net = SuperNet(space).train()
    x, y = torch.randn(4, 3, 24, 24), torch.tensor([0, 1, 2, 3]) % space.num_classes
    torch.manual_seed(4)
    got = net.resolution_loss(x, y, 0.6)
    torch.manual_seed(4)
    assert torch.equal(got, F.cross_entropy(net(x, 0.6, resolution=16), y))
    torch.manual_seed(4)
    assert not torch.equal(got, F.cross_entropy(net(x, 0.6, resolution=24), y))


@pytest.mark.parametrize("batch", [2, 6])
def test_the_resolution_loss_is_the_probability_weighted_loss_of_one_group_per_resolution(batch: int) -> None:
    """Batch 2 is the smallest that splits: one image per resolution."""
    space = get_space("tiny")
    net = SuperNet(space).train()
    with torch.no_grad():
        net.res_factor.alpha.copy_(torch.tensor([0.4, -0.3]))
    x, y = torch.randn(batch, 3, 24, 24), torch.arange(batch) % space.num_classes
    torch.manual_seed(5)
    got = net.resolution_loss(x, y, 0.3)
    torch.manual_seed(5)  # by hand: the first half at 16 px, the second at 24 px, each at tau 0.3
    p = net.res_factor.alpha.softmax(0)
    h = batch // 2
    want = p[0] * F.cross_entropy(net(x[:h], 0.3, resolution=16), y[:h])
    want = want + p[1] * F.cross_entropy(net(x[h:], 0.3, resolution=24), y[h:])
    assert torch.allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(("space_name", "paths"), [("tiny", "masked"), ("cifar", "masked"), ("tiny", "explicit"),
                                                  ("cifar", "masked-se")])  # fmt: skip
def test_convolutions_carry_no_bias_and_masks_are_not_saved(space_name: str, paths: str) -> None:
    """A BatchNorm follows every convolution, so a conv bias is a dead weight that the checkpoint and
    weight decay would carry; masks and kernel rings are rebuilt from the space, never stored."""
    net = SuperNet(get_space(space_name), paths=paths)
    se = ("se_reduce", "se_expand", "reduce", "expand")  # squeeze-excite's 1x1 convs feed activations, not BN
    convs = [m for name, m in net.named_modules() if isinstance(m, nn.Conv2d) and not name.endswith(se)]
    assert len(convs) >= len(net.super_layers()) and all(m.bias is None for m in convs)
    bn_stats = {"running_mean", "running_var", "num_batches_tracked"}
    params = {name for name, _ in net.named_parameters()}
    extra = [k for k in net.state_dict() if k not in params and k.rsplit(".", 1)[-1] not in bn_stats]
    assert extra == []


def test_the_resolution_loss_splits_any_batch_into_one_group_per_resolution() -> None:
    """4 images over 3 resolutions: groups of 2, 1 and 1 (chunk would give two groups of 2)."""
    import dataclasses

    space = dataclasses.replace(get_space("tiny"), resolutions=(16, 20, 24))
    net = SuperNet(space).train()
    x, y = torch.randn(4, 3, 24, 24), torch.tensor([0, 1, 2, 3]) % space.num_classes
    torch.manual_seed(6)
    got = net.resolution_loss(x, y, 0.6)
    torch.manual_seed(6)
    groups = [(x[:2], y[:2]), (x[2:3], y[2:3]), (x[3:], y[3:])]
    ce = torch.stack([F.cross_entropy(net(xr, 0.6, resolution=r), yr)
                      for r, (xr, yr) in zip(space.resolutions, groups, strict=True)])  # fmt: skip
    assert torch.allclose(got, (net.res_factor.alpha.softmax(0) * ce).sum())


def _all_children(space, gated: bool):
    """The largest child with every IR op SE-gated (``gated``) or none, where its layer offers one."""
    options = []
    for layer in space.layers:
        ops = [o for o in layer.options if parse_op(o.op).kind != "ir" or bool(parse_op(o.op).gate) == gated]
        ops = ops or list(layer.options)  # a layer without that kind of op (e.g. no SE op at all)
        best = max(ops, key=lambda o: (parse_op(o.op).kind != "skip", o.c, o.e, parse_op(o.op).k))
        options.append(Option(best.op, options[-1].c if layer.tied else best.c, best.e))
    return space.architecture(max(space.resolutions), options)


@pytest.mark.parametrize("gated", [False, True])
def test_masked_se_trains_a_child_on_its_own_kind_of_weights_only(gated: bool) -> None:
    """With ``masked-se`` a child without SE leaves the SE ops' weights untouched, and the other way round;
    the shared supernet gives both kinds the same convolutions."""
    torch.manual_seed(0)
    space = get_space("cifar")
    arch = _all_children(space, gated)
    x, y = torch.randn(4, 3, arch.resolution, arch.resolution), torch.randint(0, 10, (4,))
    net = SuperNet(space, paths="masked-se").train()
    F.cross_entropy(net(x, arch=arch), y).backward()
    apart = [lay for lay in net.super_layers() if lay.se_apart]
    assert apart  # the cifar space has layers with both kinds
    for lay in apart:
        used, unused = (lay.se_path, lay) if gated else (lay, lay.se_path)
        for name in ("pw", "dw", "pwl"):
            grad = getattr(unused, name).weight.grad
            assert grad is None or not grad.any(), f"layer {lay.layer.index}: {name} of the other kind trained"
        assert used.dw.weight.grad is not None and used.dw.weight.grad.any()
    shared = SuperNet(space, paths="masked").train()
    F.cross_entropy(shared(x, arch=arch), y).backward()
    assert all(lay.dw.weight.grad is not None and lay.dw.weight.grad.any() for lay in shared.super_layers()
               if lay.kind == "ir")  # fmt: skip


def test_masked_se_mixes_the_two_blocks_by_the_se_ops_total_weight() -> None:
    """out(w) = (1 - s) out(w without SE ops, renormalised) + s out(w of the SE ops, renormalised), s the
    SE ops' share: each block sees its ops' weights relative to each other (the kernel-size and
    activation mixes within a block depend on that)."""
    torch.manual_seed(0)
    net = SuperNet(get_space("cifar"), paths="masked-se").eval()
    _randomize_bn(net, 3)
    layer = next(lay for lay in net.super_layers() if lay.se_apart and lay.skip_index is None)
    x = torch.randn(2, layer.cin, 12, 12)
    q_in = torch.softmax(torch.randn(layer.same.shape[0]), 0)
    g_e = torch.softmax(torch.randn(len(layer.expansions)), 0)
    g_c = torch.softmax(torch.randn(len(layer.layer.channels)), 0)

    def out(w: list[float]) -> torch.Tensor:
        return layer(x, q_in, {"op": torch.tensor(w), "e": g_e, "c": g_c})[0]

    gated = [bool(op.gate) for op in layer.ops]
    w = [0.1, 0.3, 0.2, 0.4][: len(layer.ops)]
    s = sum(v for v, g in zip(w, gated, strict=True) if g)
    plain = [0.0 if g else v / (1 - s) for v, g in zip(w, gated, strict=True)]
    se = [v / s if g else 0.0 for v, g in zip(w, gated, strict=True)]
    with torch.no_grad():
        torch.testing.assert_close(out(w), (1 - s) * out(plain) + s * out(se), rtol=1e-4, atol=1e-5)
        # and not the shared block's mix: the two blocks hold different weights
        assert not torch.allclose(out(plain), out(se), atol=1e-3)
