"""components/common/options.py: one declaration per option gives flags, checks and by-name hand-off."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from components.common import options


@dataclass(frozen=True)
class Example:
    """A step's options."""

    batch_size: int = field(default=32, metadata={"help": "Batch.", "min": 1, "aliases": ["--batch"]})
    rate: float = field(default=0.1, metadata={"help": "Rate.", "above": 0, "below": 1})
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "Mode."})
    shuffle: bool = field(default=True, metadata={"help": "Shuffle."})
    name: str = field(default="", metadata={"help": "Name."})


def _parse(argv: list[str]) -> Example:
    parser = options.OneLineParser(prog="prog")
    options.add_arguments(parser, Example)
    return options.from_mapping(Example, vars(parser.parse_args(argv)))


def test_flags_defaults_and_round_trip() -> None:
    assert _parse([]) == Example()
    parsed = _parse(["--batch", "8", "--rate", "0.5", "--mode", "b", "--no-shuffle", "--name", "x"])
    assert parsed == Example(batch_size=8, rate=0.5, mode="b", shuffle=False, name="x")
    assert _parse(options.to_argv({"batch_size": 8, "shuffle": False, "mode": "b"})) == Example(
        batch_size=8, shuffle=False, mode="b"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "0"], "argument --batch/--batch-size: must be at least 1, got 0."),
        (["--rate", "1"], "argument --rate: must be below 1, got 1.0."),
        (["--rate", "nan"], "argument --rate: must be a finite number, got nan."),
        (["--batch-size", "x"], "argument --batch/--batch-size: expected int, got 'x'"),
        (["--mode", "c"], "argument --mode: must be one of a, b; got 'c'."),
    ],
)
def test_bad_values_are_one_line_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parse(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err


def test_by_name_hand_off_rejects_unknown_names_and_coerces_what_json_changed() -> None:
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['batchsize'\] for Example; valid: batch_size, "):
        options.from_mapping(Example, {"batchsize": 8})
    # A KFP dict parameter arrives through JSON: 16 becomes 16.0; an int is a fine float.
    assert options.from_mapping(Example, {"batch_size": 16.0, "rate": 0}) == Example(batch_size=16, rate=0.0)
    assert isinstance(options.from_mapping(Example, {"batch_size": 16.0}).batch_size, int)
    with pytest.raises(ValueError, match=r"--batch-size must be a whole number, got 16.5"):
        options.from_mapping(Example, {"batch_size": 16.5})


def test_check_names_the_flag() -> None:
    options.check(Example())
    with pytest.raises(ValueError, match=r"^--rate must be above 0, got -0.1\.$"):
        options.check(Example(rate=-0.1))
    assert options.defaults(Example)["batch_size"] == 32
