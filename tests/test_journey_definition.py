"""Journey definitions: reading, writing back, and every refusal naming its JSON path."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.cli import main
from commhistory.errors import InvalidInputError, JourneyDefinitionError
from commhistory.journeys import (
    ActivityGoal,
    ActivityTrigger,
    BranchStep,
    DateTrigger,
    Journey,
    ReEntry,
    SendStep,
    WaitStep,
    format_duration,
    parse_duration,
)
from commhistory.model import Channel, EventType

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "journeys"


def _example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _refused(data: object) -> JourneyDefinitionError:
    with pytest.raises(JourneyDefinitionError) as caught:
        Journey.from_dict(data)
    return caught.value


# --- the three documented journeys ------------------------------------------------------


def test_welcome_series_reads_as_its_graph() -> None:
    journey = Journey.from_dict(_example("welcome"))
    assert journey.key == "welcome"
    assert journey.start == "hello"
    assert isinstance(journey.trigger, ActivityTrigger)
    assert journey.trigger.name == "signup"
    branch = journey.step("opened-hello")
    assert isinstance(branch, BranchStep)
    assert branch.condition.event is EventType.OPENED
    assert branch.condition.of_step == "hello"
    assert branch.within == dt.timedelta(days=3)
    assert (branch.then, branch.otherwise) == ("tips", "reminder")
    assert [step.template for step in journey.send_steps] == [
        "welcome-1",
        "welcome-reminder",
        "welcome-tips",
    ]


def test_cart_abandonment_matches_the_cart_and_reenters_weekly() -> None:
    journey = Journey.from_dict(_example("cart_abandonment"))
    assert journey.reentry is ReEntry.PERIODIC
    assert journey.reentry_days == 7
    assert journey.goals == (ActivityGoal(activity="purchase", match=("cart_id",)),)
    line = journey.step("line-nudge")
    assert isinstance(line, SendStep)
    assert line.channel is Channel.LINE


def test_birthday_is_an_annual_date_trigger_at_nine() -> None:
    journey = Journey.from_dict(_example("birthday"))
    assert journey.trigger == DateTrigger(
        attribute="birth_date", offset_days=0, annual=True, at=dt.time(9, 0)
    )
    wait = journey.step("wait-week")
    assert isinstance(wait, WaitStep)
    assert wait.delay == dt.timedelta(days=6)
    assert wait.until_time == dt.time(10, 0)


@pytest.mark.parametrize("name", ["welcome", "cart_abandonment", "birthday"])
def test_examples_write_back_to_an_equal_journey(name: str) -> None:
    journey = Journey.from_dict(_example(name))
    again = Journey.from_dict(json.loads(json.dumps(journey.to_dict())))
    assert again == journey


def test_step_lookup_of_an_unknown_id_is_a_key_error() -> None:
    journey = Journey.from_dict(_example("welcome"))
    with pytest.raises(KeyError):
        journey.step("nope")


# --- refusals, each naming its path ---------------------------------------------------


def _with(name: str, change: Any) -> dict[str, Any]:
    data = copy.deepcopy(_example(name))
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (lambda d: d.update(colour="blue"), "$.colour", "is not a known field here"),
        (lambda d: d.pop("key"), "$.key", "is required"),
        (lambda d: d.update(key="Welcome Series"), "$.key", "lower case"),
        (lambda d: d.update(version=0), "$.version", "at least 1"),
        (lambda d: d.update(version="1"), "$.version", "must be an integer"),
        (lambda d: d.update(version=True), "$.version", "must be an integer"),
        (lambda d: d.update(reentry="sometimes"), "$.reentry", "must be one of"),
        (lambda d: d.update(reentry_days=3), "$.reentry_days", "only to reentry 'periodic'"),
        (lambda d: d["trigger"].update(type="webhook"), "$.trigger.type", "must be one of"),
        (lambda d: d["trigger"].update(extra=1), "$.trigger.extra", "not a known field"),
        (lambda d: d["steps"][0].update(channel="pigeon"), "$.steps[0].channel", "one of"),
        (lambda d: d["steps"][0].update(next="nowhere"), "$.steps[0].next", "names no step"),
        (lambda d: d["steps"][1].update(delay="2 days"), "$.steps[1].delay", "duration"),
        (lambda d: d["steps"][1].pop("delay"), "$.steps[1]", "a wait needs"),
        (lambda d: d["steps"][2].update(within="0s"), "$.steps[2].within", "positive"),
        (
            lambda d: d["steps"][2]["condition"].update(of_step="wait-2d"),
            "$.steps[2].condition.of_step",
            "names no send step",
        ),
        (
            lambda d: d["steps"][2]["condition"].update(activity="purchase"),
            "$.steps[2].condition",
            "exactly one of event and activity",
        ),
        (lambda d: d["steps"][5].update(id="hello"), "$.steps[5].id", "repeats the id"),
        (lambda d: d.update(start="tips"), "$.steps[0]", "cannot be reached"),
        (lambda d: d.update(steps=[]), "$.steps", "at least one step"),
        (lambda d: d.update(steps={}), "$.steps", "must be a list"),
        (lambda d: d["goals"][0].update(type="delete"), "$.goals[0].type", "must be one of"),
        (
            lambda d: d["goals"].append(
                {"type": "activity", "activity": "purchase", "match": ["sku"]}
            ),
            "$.goals[1].match",
            "needs an activity trigger",
        ),
    ],
)
def test_refusals_name_the_path_and_the_reason(change: Any, field: str, reason: str) -> None:
    data = _with("birthday" if "match" in field else "welcome", change)
    error = _refused(data)
    assert error.field == field
    assert reason in error.reason
    assert isinstance(error, InvalidInputError)


def test_a_date_offset_beyond_a_year_is_refused() -> None:
    data = _with("birthday", lambda d: d["trigger"].update(offset_days=400))
    assert _refused(data).field == "$.trigger.offset_days"


def test_a_time_of_day_must_be_hh_mm() -> None:
    data = _with("birthday", lambda d: d["trigger"].update(at="9am"))
    error = _refused(data)
    assert error.field == "$.trigger.at"
    assert "HH:MM" in error.reason or "09:30" in error.reason


def test_a_loop_without_a_sure_wait_is_refused_and_named() -> None:
    data = _with("welcome", lambda d: d["steps"][5].update(next="hello"))
    data["steps"][1]["delay"] = "0s"  # the only wait in the loop no longer waits
    data["steps"][4]["delay"] = "0s"
    error = _refused(data)
    assert "loops without a wait" in error.reason
    assert "hello" in error.reason


def test_a_loop_through_a_wait_is_allowed() -> None:
    data = _with("welcome", lambda d: d["steps"][5].update(next="wait-4d"))
    journey = Journey.from_dict(data)
    tips = journey.step("tips")
    assert isinstance(tips, SendStep)
    assert tips.next == "wait-4d"


def test_an_until_allowed_wait_alone_does_not_break_a_loop() -> None:
    data = _with("welcome", lambda d: d["steps"][5].update(next="wait-4d"))
    data["steps"][4] = {"type": "wait", "id": "wait-4d", "until_allowed": True, "next": "tips"}
    assert "loops without a wait" in _refused(data).reason


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(JourneyDefinitionError) as caught:
        Journey.loads("{not json")
    assert caught.value.field == "$"
    assert _refused([1, 2]).reason == "must be an object"


def test_errors_never_show_the_values() -> None:
    secret = "taro.yamada@example.jp"
    data = _with("welcome", lambda d: d.update(key=secret))
    assert secret not in str(_refused(data))


# --- durations --------------------------------------------------------------------


@given(st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=3650)))
def test_durations_write_back(value: dt.timedelta) -> None:
    value = dt.timedelta(seconds=int(value.total_seconds()))
    assert parse_duration(format_duration(value)) == value


@given(st.text(alphabet="0123456789dhms x-", max_size=12))
def test_duration_parser_accepts_only_its_form(text: str) -> None:
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    expected: int | None = 0
    order = "dhms"
    last = -1
    number = ""
    for char in text:
        if char.isdigit():
            number += char
        elif char in units and number and order.index(char) > last:
            assert expected is not None
            expected += int(number) * units[char]
            last = order.index(char)
            number = ""
        else:
            expected = None
            break
    if not text or number:
        expected = None
    if expected is None:
        with pytest.raises(JourneyDefinitionError):
            parse_duration(text)
    else:
        assert parse_duration(text) == dt.timedelta(seconds=expected)


# --- random graphs: the checks against a brute-force reading ----------------------------


@st.composite
def _graphs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], str]:
    count = draw(st.integers(1, 7))
    ids = [f"s{i}" for i in range(count)]
    target = st.one_of(st.none(), st.sampled_from(ids))
    steps: list[dict[str, Any]] = []
    for step_id in ids:
        kind = draw(st.sampled_from(["send", "wait", "wait-soft", "branch"]))
        if kind == "send":
            steps.append(
                {
                    "type": "send",
                    "id": step_id,
                    "template": "t",
                    "channel": "email",
                    "next": draw(target),
                }
            )
        elif kind == "wait":
            steps.append({"type": "wait", "id": step_id, "delay": "1h", "next": draw(target)})
        elif kind == "wait-soft":
            steps.append(
                {"type": "wait", "id": step_id, "until_allowed": True, "next": draw(target)}
            )
        else:
            steps.append(
                {
                    "type": "branch",
                    "id": step_id,
                    "condition": {"activity": "purchase"},
                    "within": "1d",
                    "then": draw(target),
                    "otherwise": draw(target),
                }
            )
    return [
        {key: value for key, value in step.items() if value is not None} for step in steps
    ], draw(st.sampled_from(ids))


def _edges(step: dict[str, Any]) -> list[str]:
    return [step[name] for name in ("next", "then", "otherwise") if step.get(name)]


@settings(max_examples=300)
@given(_graphs())
def test_graph_checks_agree_with_brute_force(graph: tuple[list[dict[str, Any]], str]) -> None:
    steps, start = graph
    by_id = {step["id"]: step for step in steps}
    reached = {start}
    frontier = [start]
    while frontier:
        for nxt in _edges(by_id[frontier.pop()]):
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    hard = {step["id"] for step in steps if step["type"] == "wait" and "delay" in step}

    def loops_back(origin: str) -> bool:
        # Can we walk from origin back to origin through steps that do not surely wait?
        seen: set[str] = set()
        todo = [n for n in _edges(by_id[origin]) if n not in hard]
        while todo:
            node = todo.pop()
            if node == origin:
                return True
            if node in seen:
                continue
            seen.add(node)
            todo.extend(n for n in _edges(by_id[node]) if n not in hard)
        return False

    data = {
        "key": "g",
        "version": 1,
        "trigger": {"type": "activity", "name": "signup"},
        "steps": steps,
        "start": start,
    }
    if reached != set(by_id):
        error = _refused(data)
        assert error.reason == "cannot be reached from the start step"
        unreached = [i for i, step in enumerate(steps) if step["id"] not in reached]
        assert error.field == f"$.steps[{unreached[0]}]"
    elif any(loops_back(step_id) for step_id in by_id if step_id not in hard):
        assert "loops without a wait" in _refused(data).reason
    else:
        journey = Journey.from_dict(data)
        assert Journey.from_dict(journey.to_dict()) == journey


# --- the CLI ----------------------------------------------------------------------


def test_cli_validate_prints_the_graph(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journey", "validate", str(EXAMPLES / "welcome.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("welcome v1: valid; trigger activity, 6 steps")
    assert " * hello: send welcome-1 (email, marketing) -> wait-2d" in out
    assert any(
        "branch on opened of hello within 3d -> yes: tips, no: reminder" in line for line in out
    )


def test_cli_validate_json_reads_back(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["journey", "validate", "--format", "json", str(EXAMPLES / "cart_abandonment.json")])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert Journey.from_dict(printed) == Journey.load(EXAMPLES / "cart_abandonment.json")


def test_cli_validate_refusal_exits_2_with_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _with("welcome", lambda d: d["steps"][0].update(next="nowhere"))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    assert main(["journey", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "$.steps[0].next: names no step" in err


def test_yaml_definitions_read_like_json(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "welcome.yaml"
    path.write_text(yaml.safe_dump(_example("welcome")), encoding="utf-8")
    assert Journey.load(path) == Journey.load(EXAMPLES / "welcome.json")
