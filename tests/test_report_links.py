"""Clicks per link (issue 13, item 7): link labels, the stored ``events.link``, the report.

Click URLs are encrypted; ingest keeps a plain link label (no query string, no fragment,
identifier-like path segments masked), and the report counts clicks per campaign and label
in the database. SQLite, PostgreSQL and the memory repository must agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.audit import Actor, Policy
from commhistory.cli import main
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError, PermissionDenied
from commhistory.facade import CommHistory, open_repository
from commhistory.kpi.links import LinkClicks, top_links
from commhistory.kpi.report import build_report, render_html, render_json
from commhistory.model import Channel, Direction, Event, EventType, Message
from commhistory.normalize.link import MAX_LINK, link_label

SENT = datetime(2024, 5, 1, tzinfo=UTC)
SALE = "https://shop.example/sale"


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("https://Shop.Example/sale?utm_source=mail&uid=42#top", SALE),
        ("HTTP://shop.example:8080/a/b/", "http://shop.example:8080/a/b/"),
        ("https://user:pw@shop.example/x", "https://shop.example/x"),
        ("https://shop.example", "https://shop.example/"),
        ("https://shop.example/u/taro@example.com/orders", "https://shop.example/u/*/orders"),
        ("https://shop.example/u/taro%40example.com", "https://shop.example/u/*"),
        ("https://shop.example/order/1234567", "https://shop.example/order/*"),
        ("https://shop.example/reset/9f2c81aa0b7e4d1c9a3f", "https://shop.example/reset/*"),
        ("https://shop.example/2024/spring-sale", "https://shop.example/2024/spring-sale"),
        ("mailto:taro@example.com", None),
        ("tel:+819012345678", None),
        ("https:///no-host", None),
        ("https://shop.example:99999/x", None),
        ("", None),
        (None, None),
    ],
)
def test_link_label(url: str | None, label: str | None) -> None:
    assert link_label(url) == label


@given(
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,5}){1,2}", fullmatch=True),
    st.lists(st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30)),
    st.text(max_size=40),
    st.emails(),
)
def test_labels_keep_no_query_fragment_or_address(
    scheme: str, host: str, segments: list[str], tail: str, email: str
) -> None:
    path = "/".join(s.replace("?", "").replace("#", "") for s in segments)
    url = f"{scheme}://{host}/{path}/{email}?e={email}#{tail}"
    label = link_label(url)
    assert label is not None
    assert label.startswith(f"{scheme}://{host}/")
    assert "?" not in label
    assert "#" not in label
    assert "@" not in label
    assert email not in label
    assert len(label) <= MAX_LINK
    if len(label) < MAX_LINK - 3:
        assert link_label(label) == label  # a fixed point


def test_top_links_refuses_a_non_positive_count() -> None:
    with pytest.raises(InvalidInputError) as info:
        top_links((), 0)
    assert info.value.field == "top"


# --------------------------------------------------------------------------- storage


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        yield CommHistory.in_memory()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'links.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    history = open_repository(url, Keyring.generate())
    try:
        yield history
    finally:
        history.close()


def _message(i: int, campaign: str | None, contact: str = "c1", **kw: Any) -> Message:
    return Message(
        message_id=f"m{i}", channel=Channel.EMAIL, direction=Direction.OUTBOUND,
        contact_id=contact, address=f"{contact}@example.com", sent_at=SENT,
        campaign_id=campaign, provider="sg", provider_message_id=f"p{i}", **kw,
    )  # fmt: skip


def _click(n: int, url: str | None, *, machine: bool = False, **to: Any) -> Event:
    return Event(
        event_id=f"e{n}", type=EventType.CLICKED, occurred_at=SENT + timedelta(minutes=n),
        url=url, machine=machine, **to,
    )  # fmt: skip


def _store(repo: CommHistory[Any]) -> None:
    repo.record_messages(
        [_message(0, "spring"), _message(1, "spring", "c2"), _message(2, "summer"),
         _message(3, None)]
    )  # fmt: skip
    repo.record_events(
        [
            _click(1, f"{SALE}?uid=c1", message_id="m0"),
            _click(2, f"{SALE}?uid=c2", message_id="m1"),
            _click(3, f"{SALE}#x", message_id="m1", machine=True),  # a link scanner
            _click(4, "https://shop.example/shoes", message_id="m0"),
            _click(5, "https://shop.example/shoes", message_id="m0", machine=True),
            _click(6, "mailto:help@shop.example", message_id="m0"),  # no label
            _click(7, None, message_id="m2"),  # no URL
            _click(8, "https://shop.example/hats?id=9", message_id="m2"),
            _click(9, "https://shop.example/none", message_id="m3"),
            Event(event_id="e10", type=EventType.OPENED, occurred_at=SENT, message_id="m2",
                  url="https://shop.example/not-a-click"),
        ]
    )  # fmt: skip
    # A click before its message (an orphan, linked when the message comes) counts too.
    repo.record_events([_click(11, f"{SALE}?late=1", provider="sg", provider_message_id="p4")])
    repo.record_messages([_message(4, "spring", "c3")])


def _rows(links: tuple[LinkClicks, ...]) -> list[tuple[Any, ...]]:
    return [(x.campaign_id, x.link, x.clicks, x.human_clicks, x.share) for x in links]


def test_link_clicks_per_campaign(repo: CommHistory[Any]) -> None:
    _store(repo)
    assert _rows(repo.link_clicks()) == [
        ("spring", SALE, 4, 3, 0.75),
        ("spring", "https://shop.example/shoes", 2, 1, 0.25),
        ("summer", "https://shop.example/hats", 1, 1, 1.0),
        (None, "https://shop.example/none", 1, 1, 1.0),
    ]
    everything = repo.link_clicks(exclude_machine=False)
    assert [(x.link, x.share) for x in everything[:2]] == [
        (SALE, 4 / 6),
        ("https://shop.example/shoes", 2 / 6),
    ]
    assert repo.link_clicks(since=SENT + timedelta(days=1)) == ()
    with pytest.raises(InvalidInputError):
        repo.link_clicks(since=datetime(2024, 1, 1))  # naive


def test_erasure_forgets_the_links(repo: CommHistory[Any]) -> None:
    _store(repo)
    repo.erase_subject("c1")
    # m0, m2 and m3 were c1's: only c2's and c3's clicks keep a link.
    assert _rows(repo.link_clicks()) == [("spring", SALE, 3, 2, 1.0)]


def test_the_link_column_holds_no_query(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    with open_repository(url, Keyring.generate()) as repo:
        _store(repo)
        with repo.store.transaction(read=True) as conn:
            stored = {r[0] for r in conn.exec_driver_sql("SELECT link FROM events").all()}
    assert stored == {
        None,
        SALE,
        "https://shop.example/shoes",
        "https://shop.example/hats",
        "https://shop.example/none",
    }


def test_guarded_link_clicks_need_read_metrics(repo: CommHistory[Any]) -> None:
    _store(repo)
    analyst = repo.as_actor(Actor("an-1", ["analyst"]), purpose="weekly report")
    assert analyst.link_clicks() == repo.link_clicks()
    policy = Policy(roles={"nothing": []})
    nobody = repo.as_actor(Actor("x-1", ["nothing"]), purpose="t", policy=policy)
    with pytest.raises(PermissionDenied):
        nobody.link_clicks()


# --------------------------------------------------------------------------- report


def test_report_shows_the_top_links(repo: CommHistory[Any]) -> None:
    _store(repo)
    data = build_report(repo, top_links_per_campaign=1)
    assert [(x.campaign_id, x.link) for x in data.links] == [
        ("spring", SALE),
        ("summer", "https://shop.example/hats"),
        (None, "https://shop.example/none"),
    ]
    page = render_html(data)
    section = page[page.index("<h2>Clicks per link</h2>") : page.index("<h2>Table</h2>")]
    assert f'<td class="k link">{SALE}</td><td>4</td><td>3</td><td>75.0</td>' in section
    assert "shoes" not in section  # only the top one per campaign
    assert "uid" not in page
    assert "c1@example.com" not in page
    doc = json.loads(render_json(data.main, ab=data.ab, links=data.links))
    assert doc["links"][0] == {
        "campaign_id": "spring",
        "link": SALE,
        "clicks": 4,
        "human_clicks": 3,
        "share": 0.75,
    }


def test_report_command_prints_links(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, keyring = f"sqlite:///{tmp_path / 'h.db'}", tmp_path / "k.keyring"
    key = Keyring.generate()
    key.save(keyring)
    with open_repository(db, key) as repo:
        _store(repo)
    store = ["--db", db, "--keyring", str(keyring)]
    assert main(["report", *store, "--format", "json", "--top-links", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [x["link"] for x in doc["links"]] == [
        SALE,
        "https://shop.example/hats",
        "https://shop.example/none",
    ]
    out = tmp_path / "r.html"
    assert main(["report", *store, "--format", "html", "--out", str(out)]) == 0
    assert "https://shop.example/shoes" in out.read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["report", *store, "--top-links", "0"])
    assert info.value.code == 2
    assert "--top-links" in capsys.readouterr().err


_URL_PARTS = st.sampled_from(
    ["http", "https", "HTTPS", "mailto", ":", "//", "/", "?", "#", "@", "[", "]", "::1", ":80",
     ":x", "a", "Shop.Example", "12345", "u", "%40", "tok3n" * 4, " ", "\t", "\n", "&", "="]
)  # fmt: skip


@given(st.lists(_URL_PARTS, max_size=14).map("".join) | st.text(max_size=40))
def test_labels_are_computed_once_per_start_and_equal_the_whole_urls(url: str) -> None:
    # link_label caches by what comes before the first "?" or "#"; the label is the
    # one of the whole URL (query and fragment included) by the same rules.
    from commhistory.normalize.link import _label

    assert link_label(url) == (_label.__wrapped__(url.strip()) if url else None)
