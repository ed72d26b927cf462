import re
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from lion_core.config import RefereeConfig, RunConfig
from lion_core.config.explain import REQUIRED, explain, field_help, section_help
from lion_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
LEAVES = {h.path: h for h in field_help()}


class _Config(BaseModel):  # as lion_core.config's sections are made (lion_core.config.base.Section)
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


HEAD = re.compile(r"^(\S+): ", re.MULTILINE)  # a leaf's first line: `path: type = default`


def _flatten(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:  # an empty mapping (budget.per_role) is a leaf
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def test_every_leaf_is_found():
    dumped = RunConfig().model_dump(mode="json")
    dumped["evaluation"]["judge"] = RefereeConfig().model_dump(mode="json")  # None by default: its fields too
    for role in (dumped["teacher"], dumped["referee"], dumped["generator"], *dumped["evaluation"].values()):
        if isinstance(role, dict) and "batch" in role:  # batch.price: None by default (half of price)
            role["batch"]["price"] = {"prompt_per_million": 0.0, "completion_per_million": 0.0}
    assert _flatten(dumped) == set(LEAVES)
    # the subclass-specific fields of each role
    for path in ("referee.prompt_style", "referee.max_reasks", "generator.max_tokens_per_seed_word",
                 "generator.max_rounds", "evaluation.judge.max_reasks", "evaluation.reference.retry.max_attempts"):
        assert path in LEAVES


def test_every_field_has_a_description():
    """A field added without a docstring after it fails here."""
    undocumented = [h.path for h in [*LEAVES.values(), *section_help()] if not h.description.strip()]
    assert not undocumented, f"write a docstring after these fields in lion_core/config/: {undocumented}"


def test_descriptions_are_pydantic_field_descriptions():
    assert "hard" in RunConfig.model_fields["loop"].annotation.model_fields["tau"].description
    assert RunConfig.model_json_schema()["$defs"]["RateLimits"]["properties"]["requests_per_minute"]["description"]


def test_an_undocumented_field_has_an_empty_description():
    class Documented(_Config):
        a: int = 1
        """Has one."""
        b: int = 2

    rows = {h.path: h for h in field_help(Documented)}
    assert rows["a"].description == "Has one." and rows["b"].description == ""


def test_types_and_defaults():
    def row(path):
        return LEAVES[path].type, LEAVES[path].default

    assert row("teacher.rate_limits.requests_per_minute") == ("int > 0", "500")
    assert row("orchestration.max_failed_fraction") == ("float in [0, 1]", "0.02")
    assert row("training.init_from") == ('"previous" | "base"', "previous")
    assert row("training.hostfile") == ("str | None", "null")
    assert row("student.keep_layers") == ("(int > 0) | None", "null")
    assert row("teacher.truncate_keep_fraction") == ("float in (0, 1)", "0.5")
    assert row("loop.hard_easy_ratio") == ("[float >= 0, float >= 0]", "[1.0, 1.0]")
    assert row("training.learning_rate") == ("float > 0", "2.0e-05")
    assert row("training.bf16") == ("bool", "true")
    # each role's own defaults, not the shared model's
    assert LEAVES["teacher.sampling.temperature"].default == "0.7"
    assert LEAVES["referee.sampling.temperature"].default == "0.2"
    assert LEAVES["generator.sampling.temperature"].default == "1.0"
    assert LEAVES["generator.sampling.max_tokens"].default == "null"


def test_required_fields_say_so():
    class Needs(_Config):
        name: Annotated[str, Field(min_length=1)]
        """A name."""
        mode: Literal["a", "b"] = "a"
        """A mode."""

    rows = {h.path: h for h in field_help(Needs)}
    assert rows["name"].default == REQUIRED and rows["mode"].default == "a"


def test_explain_lists_every_leaf_grouped_by_section():
    text = explain()
    assert set(HEAD.findall(text)) == set(LEAVES)
    for section in ("teacher", "teacher.rate_limits", "loop", "evaluation.judge", "student.generation"):
        assert f"[{section}]" in text
    assert explain(None) == explain("") == text


def test_explain_one_leaf():
    text = explain("teacher.rate_limits.requests_per_minute")
    assert text.startswith("teacher.rate_limits.requests_per_minute: int > 0 = 500\n")
    assert "Requests per minute" in text
    assert HEAD.findall(text) == ["teacher.rate_limits.requests_per_minute"]


def test_explain_a_section_shows_only_that_section():
    text = explain("teacher.rate_limits")
    assert set(HEAD.findall(text)) == {f"teacher.rate_limits.{f}" for f in
                                       ("requests_per_minute", "tokens_per_minute", "max_concurrency",
                                        "adaptive")}
    assert text.startswith("[teacher.rate_limits]")
    teacher = set(HEAD.findall(explain("teacher")))
    assert teacher == {p for p in LEAVES if p.startswith("teacher.")}
    assert "[referee]" not in explain("teacher")
    assert "(optional, default: null)" in explain("evaluation.judge")


@pytest.mark.parametrize(("field", "suggestion"), [
    ("loop.taux", "loop.tau"),
    ("teacher.rate_limit", "teacher.rate_limits"),
    ("requests_per_minute", "teacher.rate_limits.requests_per_minute"),
    ("traning.bf16", "training.bf16"),
])
def test_unknown_field_names_it_and_suggests(field, suggestion):
    with pytest.raises(ConfigError) as err:
        explain(field)
    assert repr(field) in str(err.value) and "did you mean" in str(err.value) and suggestion in str(err.value)


def test_unknown_field_without_close_match():
    with pytest.raises(ConfigError, match="unknown config field 'zzz'"):
        explain("zzz")
    with pytest.raises(ConfigError):
        explain("teacher.rate_limits.requests_per_minute.more")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_say_how_to_run_and_explain(path):
    lines = path.read_text().splitlines()
    header = "\n".join(lines[:next(i for i, line in enumerate(lines) if not line.startswith("#"))])
    assert f"lion run --config configs/{path.name}" in header
    assert "lion config explain" in header
