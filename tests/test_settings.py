"""One home for every setting: ``hwnas search`` and ``hwnas train`` take their options, defaults and
choices from SearchConfig and TrainConfig, and each list of choices is written once."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from hwnas.cli import build_parser
from hwnas.core.formats import FORMAT_PRECISIONS, PRECISIONS
from hwnas.core.options import CLI, option_fields, options_of
from hwnas.latency.calibration_models import MODELS
from hwnas.search.config import CHILD_SAMPLING, PATHS, PENALTIES, SELECTION_RESOLUTION, SearchConfig
from hwnas.train.config import BAD_IMAGES, DATA_MODES, INITS, TrainConfig

PACKAGE = Path(__file__).resolve().parent.parent / "hwnas"


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


@pytest.mark.parametrize(("verb", "cls"), [("search", SearchConfig), ("train", TrainConfig)])
def test_the_parsers_defaults_and_choices_are_the_dataclasss(verb: str, cls: type) -> None:
    actions = _actions(_subparser(verb))
    fields = option_fields(cls)
    assert len(fields) >= 10
    for f in fields:
        action = actions[f.name]
        assert action.option_strings[0] == "--" + f.name.replace("_", "-")
        if f.default is dataclasses.MISSING:
            assert action.required
            continue
        assert action.default == f.default, f.name
        meta = f.metadata[CLI]
        if meta["choices"] is not None:
            if meta["parser_choices"]:
                assert tuple(action.choices) == meta["choices"], f.name  # type: ignore[arg-type]
            else:  # checked by the config's check(), listed in the help
                assert action.choices is None and action.metavar == "{" + ",".join(meta["choices"]) + "}"


def test_a_command_line_with_no_options_builds_the_default_config() -> None:
    """What ``hwnas search`` runs with no options is what ``SearchConfig(space, budget)`` is, field by
    field (a default changed in one place only would fail here)."""
    args = _subparser("search").parse_args(["--space", "tiny", "--budget-mflops", "1"])
    assert SearchConfig(budget=1.0, **options_of(SearchConfig, args)) == SearchConfig(space="tiny", budget=1.0)
    args = _subparser("train").parse_args(["--arch", "a.json"])
    assert TrainConfig(**options_of(TrainConfig, args)) == TrainConfig()
    args = _subparser("search").parse_args(["--space", "tiny", "--budget-mflops", "1", "--no-sampled-child",
                                            "--paths", "masked-se", "--evolution", "0", "--tau-end", "0.25"])  # fmt: skip
    cfg = SearchConfig(budget=1.0, **options_of(SearchConfig, args))
    assert (cfg.sampled_child, cfg.paths, cfg.evolution, cfg.tau_end) == (False, "masked-se", 0, 0.25)


def test_the_choices_are_the_ones_the_library_accepts() -> None:
    from hwnas.core.errors import HwnasError
    from hwnas.search.penalty import Penalty

    assert PATHS == ("masked", "masked-se", "explicit") and PENALTIES == ("target", "hinge", "fbnet")
    for kind in PENALTIES:
        Penalty(kind, 1.0)
    with pytest.raises(HwnasError, match="unknown loss"):
        Penalty("l2", 1.0)
    for name, choices in [("paths", PATHS), ("loss", PENALTIES), ("child_sampling", CHILD_SAMPLING),
                          ("selection_resolution", SELECTION_RESOLUTION), ("data_mode", DATA_MODES),
                          ("bad_images", BAD_IMAGES)]:  # fmt: skip
        for value in choices:
            SearchConfig(space="tiny", budget=1.0, **{name: value}).check()
        with pytest.raises(HwnasError):
            SearchConfig(space="tiny", budget=1.0, **{name: "none-of-these"}).check()
    for init in INITS:
        TrainConfig(init=init, run="run").check()
    for mode in DATA_MODES:
        TrainConfig(data_mode=mode).check()
    with pytest.raises(HwnasError, match="unknown data mode"):
        TrainConfig(data_mode="disk").check()
    with pytest.raises(HwnasError, match="--init supernet needs --run"):
        TrainConfig(init="supernet").check()
    assert set(PRECISIONS) == {p for ps in FORMAT_PRECISIONS.values() for p in ps}


CHOICE_LISTS = [
    PATHS,
    PENALTIES,
    CHILD_SAMPLING,
    SELECTION_RESOLUTION,
    INITS,
    DATA_MODES,
    BAD_IMAGES,
    MODELS,
    PRECISIONS,
    *FORMAT_PRECISIONS.values(),
]


@pytest.mark.parametrize("choices", [c for c in CHOICE_LISTS if len(c) > 1])  # ("fp32",) is no list of choices
def test_each_choice_tuple_is_written_once_in_the_package(choices: tuple[str, ...]) -> None:
    literal = re.compile(r"\(\s*" + r",\s*".join(re.escape(f'"{c}"') for c in choices) + r"\s*,?\s*\)")
    found = [f"{p.relative_to(PACKAGE)}:{text.count(chr(10), 0, m.start()) + 1}"
             for p in sorted(PACKAGE.rglob("*.py")) for text in [p.read_text()] for m in literal.finditer(text)]  # fmt: skip
    assert len(found) <= 1, f"{choices} is written in {found}; import it from where it is defined"
