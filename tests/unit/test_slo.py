"""SLO configuration: objectives per model, how a request is judged, the bucket boundaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyllm.slo import Objectives, SLOConfig, SLOError, load_slo, parse_duration, parse_slo


@pytest.mark.parametrize(("given", "seconds"), [
    (0.5, 0.5), (2, 2.0), ("250ms", 0.25), ("1.5s", 1.5), ("1m", 60.0), (" 20 ms ", 0.02),
    (".5", 0.5),
])
def test_durations_are_seconds_or_text_with_a_unit(given: object, seconds: float) -> None:
    assert parse_duration(given) == pytest.approx(seconds)


@pytest.mark.parametrize("given", [0, -1, "0ms", "1h", "fast", True, None, float("inf")])
def test_bad_durations_say_what_is_valid(given: object) -> None:
    with pytest.raises(ValueError, match=r"seconds|more than 0"):
        parse_duration(given)


def test_models_inherit_the_default_and_may_drop_an_objective() -> None:
    config = parse_slo({"slo": {
        "default": {"ttft": "500ms", "tpot": "50ms", "e2e": 10, "target": 0.99},
        "models": {"fast": {"ttft": 0.2}, "batch": {"ttft": None, "target": 0.9}},
    }}, source="s.yaml")
    assert config.objectives_for("other") == Objectives(0.5, 0.05, 10.0, 0.99)
    assert config.objectives_for("fast") == Objectives(0.2, 0.05, 10.0, 0.99)
    assert config.objectives_for("batch") == Objectives(None, 0.05, 10.0, 0.9)
    assert config.boundaries() == {
        "inference_request_duration_seconds": (10.0,),
        "inference_time_per_output_token_seconds": (0.05,),
        "inference_ttft_seconds": (0.2, 0.5),
        "request_latency_seconds": (10.0,),
    }


def test_without_a_default_unnamed_models_have_no_objectives() -> None:
    config = parse_slo({"slo": {"models": {"m": {"e2e": 1}}}})
    assert config.objectives_for("n") is None
    assert config.all_objectives() == [("m", Objectives(e2e=1.0))]
    assert parse_slo({}).all_objectives() == []


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "slo.yaml"
    path.write_text("slo:\n"
                    "  defaults: {}\n"
                    "  default: {ttft: 1x, target: 99}\n"
                    "  models:\n"
                    "    a: {p99: 1}\n"
                    "    b: {target: 0.9}\n"
                    "    c: 3\n")
    with pytest.raises(SLOError) as caught:
        load_slo(path)
    assert caught.value.problems == [
        f"{path}: slo: unknown key 'defaults' (valid: default, models)",
        f"{path}: slo.default: ttft: expected seconds (a number > 0) or text like '500ms', "
        "'2s', '1m', got '1x'",
        f"{path}: slo.default: target must be a ratio between 0 and 1 (e.g. 0.99 for 99 %), "
        "got 99",
        f"{path}: slo.models.a: unknown key 'p99' (valid: ttft, tpot, e2e, target: ttft, tpot "
        "and e2e in seconds or '500ms', target a ratio)",
        f"{path}: slo.models.b: sets no objective: give at least one of ttft, tpot, e2e",
        f"{path}: slo.models.c: must be a mapping of objectives (ttft, tpot, e2e, target), "
        "got 3",
    ]


def test_a_bad_section_and_a_missing_file_are_named(tmp_path: Path) -> None:
    path = tmp_path / "slo.yaml"
    path.write_text("slo: [1]\n")
    with pytest.raises(SLOError, match="slo: must be a mapping with default and/or models"):
        load_slo(path)
    with pytest.raises(SLOError, match="no such file"):
        load_slo(tmp_path / "nope.yaml")


class TestJudge:
    objectives = Objectives(ttft=0.5, tpot=0.05, e2e=10.0)

    def test_met_means_at_or_under_the_threshold(self) -> None:
        # At the threshold counts as met: the same rule as a histogram's le bucket.
        assert self.objectives.judge("success", ttft=0.5, tpot=0.05, e2e=10.0) == {
            "ttft": True, "tpot": True, "e2e": True, "all": True}
        assert self.objectives.judge("success", ttft=0.51, tpot=0.01, e2e=1.0) == {
            "ttft": False, "tpot": True, "e2e": True, "all": False}

    def test_what_was_not_measured_is_not_judged(self) -> None:
        # Not streamed (no TTFT), one token (no TPOT): judged on the whole request only.
        assert self.objectives.judge("success", ttft=None, tpot=None, e2e=3.0) == {
            "e2e": True, "all": True}

    def test_a_failed_request_misses_everything(self) -> None:
        for status in ("error", "timeout"):
            assert self.objectives.judge(status, ttft=0.1, tpot=None, e2e=0.2) == {
                "ttft": False, "tpot": False, "e2e": False, "all": False}

    def test_a_cancelled_request_is_not_judged(self) -> None:
        assert self.objectives.judge("cancelled", ttft=0.1, tpot=0.01, e2e=0.2) == {}


def test_error_budget_and_config_defaults() -> None:
    assert Objectives(e2e=1.0, target=0.999).error_budget == 0.001
    assert SLOConfig().objectives_for("m") is None
