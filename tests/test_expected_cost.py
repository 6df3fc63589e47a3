from __future__ import annotations

import itertools
import random
import zlib

import pytest
import torch

from hwnas.search.cost import discrete_cost, expected_cost, one_hot_choices
from hwnas.spaces import get_space
from hwnas.spaces.kernels import Kernel, arch_kernels


def fake_latency(k: Kernel) -> float:
    """A LUT-like cost with no structure to lean on: a fixed pseudo-random value per key."""
    return 0.001 + (zlib.crc32(k.key.encode()) % 10_000) / 1e4


@pytest.mark.parametrize("space_name", ["tiny", "cifar", "fbnetv2"])
@pytest.mark.parametrize("kernel_cost", [fake_latency, lambda k: k.flops], ids=["latency", "flops"])
def test_one_hot_equals_the_discrete_prediction(space_name: str, kernel_cost) -> None:
    space = get_space(space_name)
    cost = expected_cost(space, kernel_cost, dtype=torch.float64)
    rng = random.Random(0)
    for arch in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(5))]:
        res, probs = one_hot_choices(space, arch)
        assert float(cost(res, probs)) == pytest.approx(discrete_cost(arch, kernel_cost), rel=1e-12)


def _random_probs(space, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    res = torch.rand(len(space.resolutions), generator=g, dtype=torch.float64).softmax(0)
    probs = [torch.randn(len(layer.options), generator=g, dtype=torch.float64).softmax(0) for layer in space.layers]
    return res, probs


def test_matches_the_brute_force_expectation_over_all_architectures() -> None:
    space = get_space("tiny")
    cost = expected_cost(space, fake_latency, dtype=torch.float64)
    res, probs = _random_probs(space, 1)
    brute = 0.0
    for r, resolution in enumerate(space.resolutions):
        for choice in itertools.product(*(range(len(layer.options)) for layer in space.layers)):
            p = float(res[r])
            for layer_probs, j in zip(probs, choice, strict=True):
                p *= float(layer_probs[j])
            arch = space.architecture(
                resolution, [layer.options[j] for layer, j in zip(space.layers, choice, strict=True)]
            )
            brute += p * discrete_cost(arch, fake_latency)
    assert float(cost(res, probs)) == pytest.approx(brute, rel=1e-10)


def test_gradients_match_finite_differences() -> None:
    space = get_space("tiny")
    cost = expected_cost(space, fake_latency, dtype=torch.float64)
    res, probs = _random_probs(space, 2)
    inputs = (res.requires_grad_(), *(p.requires_grad_() for p in probs))
    assert torch.autograd.gradcheck(lambda r, *ps: cost(r, list(ps)), inputs, eps=1e-6, atol=1e-8)


def test_bad_inputs() -> None:
    space = get_space("tiny")
    cost = expected_cost(space, fake_latency)
    res, probs = _random_probs(space, 3)
    with pytest.raises(ValueError, match="need option probabilities for 5 layers"):
        cost(res, probs[:-1])
    with pytest.raises(ValueError, match="not an architecture of the space"):
        one_hot_choices(space, get_space("cifar").sample(0))


def test_a_search_costs_expected_cost_has_the_dtype_asked_for() -> None:
    """The search runs the expected cost in float32 (beside float32 logits, on any device); selection
    asks for float64 to compare it exactly with the discrete cost."""
    from hwnas.search.cost import make_cost

    space = get_space("tiny")
    cost = make_cost("flops", space)
    res, probs = one_hot_choices(space, space.sample(0))
    assert cost.expected(space)(res, probs).dtype == torch.float32
    exact = cost.expected(space, dtype=torch.float64)(res, probs)
    assert exact.dtype == torch.float64 and float(exact) == pytest.approx(cost.of(space.sample(0)), rel=1e-12)


# --- make_cost, in process (the CLI tests run it in a child process, out of mutmut's sight) -------------
def test_flops_and_params_costs_count_what_fvcore_counts() -> None:
    from hwnas.models.counting import count_arch
    from hwnas.search.cost import make_cost

    space = get_space("tiny")
    flops, params = make_cost("flops", space), make_cost("params", space)
    assert (flops.name, flops.unit, flops.offset, params.name, params.unit) == (
        "flops",
        "MFLOPs",
        0.0,
        "params",
        "Mparams",
    )
    for arch in (space.sample(1), space.largest()):
        counted = count_arch(arch)
        assert flops.of(arch) == pytest.approx(counted.flops / 1e6, rel=1e-12)
        assert params.of(arch) == pytest.approx(counted.params / 1e6, rel=1e-12)
        assert flops.fmt(flops.of(arch)).endswith(" MFLOPs")
    small, small_cost = flops.smallest(space)
    big, big_cost = flops.largest(space)
    assert small_cost == flops.of(small) < big_cost == flops.of(big)
    assert all(small_cost <= flops.of(space.sample(s)) <= big_cost for s in range(20))


def test_a_latency_cost_is_the_luts_prediction_and_names_what_it_lacks(tmp_path) -> None:
    from hwnas.core.errors import HwnasError
    from hwnas.devices import Stats
    from hwnas.latency.predictor import LatencyPredictor
    from hwnas.latency.store import LutStore
    from hwnas.search.cost import make_cost

    space = get_space("tiny")
    fp = {"kind": "ort-cpu", "runtime": "onnxruntime", "runtime_version": "1.0", "threads": 1, "batch": 1,
          "cpu_model": "X", "hwnas_version": "0.1.0", "os": "Linux 1"}  # fmt: skip
    lut = tmp_path / "t.lut"
    kernels = sorted(set(space.kernels()))
    with LutStore.create_or_open(lut, fp, "ort-cpu:threads=1") as store:
        for k in kernels:
            ms = fake_latency(k)
            store.add(k.key, 0, Stats(ms, ms, ms, ms, 0.0, 10, 2, 0.01))
    cost = make_cost("latency", space, lut)
    assert (cost.name, cost.unit, cost.source, cost.offset) == ("latency", "ms", str(lut), 0.0)
    arch = space.sample(5)
    assert cost.of(arch) == pytest.approx(LatencyPredictor.from_lut(lut).predict(arch), rel=1e-12)
    assert cost.of(arch) == pytest.approx(sum(fake_latency(k) for k in arch_kernels(arch)), rel=1e-12)
    with pytest.raises(HwnasError, match=r"^--cost latency needs a LUT: --lut FILE \(make one with 'hwnas profile'\)$"):
        make_cost("latency", space)
    with pytest.raises(HwnasError, match=r"^unknown cost 'energy'; choose one of latency, flops, params$"):
        make_cost("energy", space)
    partial = tmp_path / "p.lut"
    with LutStore.create_or_open(partial, fp, "ort-cpu:threads=1") as store:
        for k in kernels[5:]:
            store.add(k.key, 0, Stats(1.0, 1.0, 1.0, 1.0, 0.0, 10, 2, 0.01))
    shown = ", ".join(k.key for k in kernels[:3])
    with pytest.raises(HwnasError) as e:
        make_cost("latency", space, partial)
    assert str(e.value) == (f"{partial} lacks 5 kernel(s) of the space tiny ({shown} and 2 more); add them with "
                            f"'hwnas profile --space tiny --device ort-cpu:threads=1 --out {partial}'")  # fmt: skip
