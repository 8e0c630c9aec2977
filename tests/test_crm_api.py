"""CRM import from the HubSpot and Salesforce REST APIs, replayed at the HTTP layer.

The real clients run (``hubspot-api-client`` over urllib3, ``simple-salesforce``
over ``requests``); only the HTTP exchange is recorded. The responses in
``tests/fixtures/crm/`` follow the documented shapes:

* HubSpot CRM search (``POST /crm/v3/objects/contacts/search``): ``total``,
  ``results`` (``id``, ``properties`` as strings or null, ``createdAt``,
  ``updatedAt``, ``archived``) and ``paging.next.after``;
  https://developers.hubspot.com/docs/guides/api/crm/search and
  https://developers.hubspot.com/docs/api-reference/crm-contacts-v3/search/post-crm-v3-objects-contacts-search
* Salesforce REST query (``GET /services/data/vXX.X/query?q=``) and query more
  (``nextRecordsUrl``): ``totalSize``, ``done``, ``nextRecordsUrl``, ``records``
  with ``attributes`` (``type``, ``url``), times as ``2024-04-01T10:00:00.000+0000``;
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm
  and https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query_more_results.htm
"""

from __future__ import annotations

import io
import json
import pickle
import sys
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3
from hubspot import HubSpot
from hubspot.discovery.discovery_base import DiscoveryBase
from hypothesis import given
from hypothesis import strategies as st
from simple_salesforce import Salesforce

from commhistory.cli import main
from commhistory.contacts.attributes import AttributeSchema
from commhistory.contacts.crm import CrmMapping, import_source, parse_row
from commhistory.contacts.crm_api import (
    HubSpotSource,
    SalesforceSource,
    api_row,
    source_from_env,
)
from commhistory.convert import ParsedLine
from commhistory.crypto import Keyring
from commhistory.errors import (
    CrmApiError,
    CrmRowError,
    InvalidInputError,
    MissingExtraError,
    NotFoundError,
    StorageError,
)
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel, ConsentAction, ConsentMethod
from commhistory.store.memory import MemoryRepository

FIXTURES = Path(__file__).parent / "fixtures" / "crm"
BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
INSTANCE = "https://example.my.salesforce.com"
ERROR = b'{"status":"error","message":"internal error","category":"INTERNAL_ERROR"}'


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        with CommHistory(MemoryRepository()) as mem:
            yield mem
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'crm.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    with open_repository(url, Keyring.generate()) as sql:
        yield sql


def _body(name: str | dict[str, Any] | None) -> bytes:
    if isinstance(name, dict):
        return json.dumps(name).encode()
    return ERROR if name is None else (FIXTURES / f"{name}.json").read_bytes()


def _fixture(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return doc


# ---------------------------------------------------------------------- HTTP replay


class ReplayPool(urllib3.PoolManager):
    """A urllib3 pool manager answering from recorded responses, in order.

    ``PoolManager.request`` (the HubSpot client's call) still encodes the request;
    only ``urlopen``, the network, is replaced.
    """

    def __init__(self, *exchanges: tuple[int, str | dict[str, Any] | None]) -> None:
        super().__init__()
        self.exchanges = list(exchanges)
        self.sent: list[tuple[str, str, Any, dict[str, str]]] = []

    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> urllib3.HTTPResponse:
        body = kw.get("body")
        self.sent.append((method, url, json.loads(body) if body else None, dict(kw["headers"])))
        status, name = self.exchanges.pop(0)
        return urllib3.HTTPResponse(
            body=io.BytesIO(_body(name)),
            status=status,
            reason="OK" if status == 200 else "Internal Server Error",
            headers={"Content-Type": "application/json;charset=utf-8"},
            preload_content=kw.get("preload_content", True),
            request_method=method,
        )


def hubspot_client(pool: ReplayPool) -> Any:
    """A real ``HubSpot`` client whose APIs send through *pool*."""

    def factory(package: Any, api_name: str, config: dict[str, Any]) -> Any:
        api = DiscoveryBase._default_api_factory(package, api_name, config)
        api.api_client.rest_client.pool_manager = pool
        return api

    return HubSpot(access_token="test-token", api_factory=factory)


class ReplayAdapter(requests.adapters.BaseAdapter):
    """A ``requests`` transport adapter answering from recorded responses, in order."""

    def __init__(self, *exchanges: tuple[int, str | dict[str, Any] | None]) -> None:
        super().__init__()
        self.exchanges = list(exchanges)
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kw: Any) -> requests.Response:
        self.sent.append(request)
        status, name = self.exchanges.pop(0)
        response = requests.Response()
        response.status_code = status
        response._content = (
            _body(name)
            if name or status == 200
            else b'[{"message":"server error","errorCode":"SERVER_UNAVAILABLE"}]'
        )
        response.headers = requests.structures.CaseInsensitiveDict(
            {"Content-Type": "application/json;charset=UTF-8"}
        )
        response.url = str(request.url)
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


def salesforce_client(adapter: ReplayAdapter) -> Any:
    session = requests.Session()
    session.mount("https://", adapter)
    return Salesforce(instance_url=INSTANCE, session_id="test-session", session=session)


def _soql(request: requests.PreparedRequest) -> str:
    return parse_qs(urlsplit(str(request.url)).query)["q"][0]


class FailOnSecondPage:
    """A target whose second page's write fails after it wrote (so it must roll back)."""

    def __init__(self, repo: CommHistory[Any]) -> None:
        self.repo = repo
        self.calls = 0

    def declare_attributes(self, schema: AttributeSchema) -> AttributeSchema:
        return self.repo.declare_attributes(schema)

    def ingest(self, lines: Iterable[ParsedLine], *, source: str) -> Any:
        self.calls += 1
        report = self.repo.ingest(lines, source=source)
        if self.calls == 2:
            raise StorageError("the database went away")
        return report

    def transaction(self, *, read: bool = False) -> AbstractContextManager[object]:
        return self.repo.transaction(read=read)


# ---------------------------------------------------------------------- HubSpot


def test_hubspot_pages_through_the_search_api(repo: CommHistory[Any]) -> None:
    pool = ReplayPool((200, "hubspot_search_page1"), (200, "hubspot_search_page2"))
    source = HubSpotSource(hubspot_client(pool), page_size=3)
    mapping = CrmMapping.preset("hubspot", api=True)
    kept: list[datetime] = []
    report = import_source(repo, mapping, source, on_commit=kept.append)

    # Two requests: the second asks for the page after the first's cursor.
    assert [(m, urlsplit(u).path) for m, u, _, _ in pool.sent] == [
        ("POST", "/crm/v3/objects/contacts/search")
    ] * 2
    first, second = (body for _, _, body, _ in pool.sent)
    assert first["sorts"] == [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    assert first["filterGroups"] == []
    assert "after" not in first
    assert first["limit"] == 3
    assert {"email", "hs_email_optout", "lastmodifieddate"} <= set(first["properties"])
    assert second["after"] == "3"
    assert pool.sent[0][3]["Authorization"] == "Bearer test-token"

    assert (report.rows, report.imported, report.rejected, report.withdrawals) == (6, 4, 2, 2)
    assert kept == [
        datetime(2024, 5, 1, 10, tzinfo=UTC),  # page 1 committed ...
        datetime(2024, 5, 3, 12, tzinfo=UTC),  # ... then page 2
    ]
    values = repo.attributes("hubspot:101")
    assert values["email"] == "Hana.Sato@example.jp"
    assert values["phone"] == "+819012345678"
    assert values["crm_created_at"] == datetime(2024, 1, 10, 9, 15, tzinfo=UTC)
    assert repo.masked_attributes("hubspot:101")["email"] is None  # personal: encrypted
    assert repo.masked_attributes("hubspot:101")["lifecycle_stage"] == "customer"
    assert repo.attributes("hubspot:104")["phone"] == "+81312345678"
    assert "phone" not in repo.attributes("hubspot:105")  # left out of the response: as is

    # The opt-out: a withdrawal with the CRM's API as its evidence; nothing granted.
    (event,) = repo.consent_history("hubspot:102")
    assert (event.channel, event.action, event.method) == (
        Channel.EMAIL,
        ConsentAction.WITHDRAW,
        ConsentMethod.IMPORT,
    )
    assert event.source == "hubspot api: hs_email_optout"
    assert event.occurred_at == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert repo.consent.status("hubspot:101", "email", "marketing").state.value != "granted"

    # Malformed records: typed errors naming the row, the field and the reason.
    assert [(e.line, e.record, e.field) for e in report.errors] == [
        (3, "103", "email"),
        (6, "106", "hs_email_optout"),
    ]
    assert "@" in report.errors[0].reason
    assert str(report.errors[1]) == "6: hs_email_optout: expected true or false (record 106)"
    letters = sorted(repo.dead_letters(), key=lambda d: d.field)
    assert [(d.source, d.line, d.field) for d in letters] == [
        ("hubspot api", 1, "email"),
        ("hubspot api", 1, "hs_email_optout"),
    ]
    with pytest.raises(NotFoundError):
        repo.consent_history("hubspot:106")  # refused whole

    # The whole run again (--full): nothing new, nothing twice.
    history = len(repo.attribute_history("hubspot:101"))
    pool = ReplayPool((200, "hubspot_search_page1"), (200, "hubspot_search_page2"))
    again = import_source(repo, mapping, HubSpotSource(hubspot_client(pool), page_size=3))
    assert (again.imported, again.rejected) == (4, 2)
    assert len(repo.dead_letters()) == 2
    assert len(repo.consent_history("hubspot:102")) == 1
    assert len(repo.attribute_history("hubspot:101")) == history


def test_hubspot_resumes_after_a_failure_on_page_two(repo: CommHistory[Any]) -> None:
    mapping = CrmMapping.preset("hubspot", api=True)
    pool = ReplayPool((200, "hubspot_search_page1"), (200, "hubspot_search_page2"))
    kept: list[datetime] = []
    with pytest.raises(StorageError):
        import_source(
            FailOnSecondPage(repo),
            mapping,
            HubSpotSource(hubspot_client(pool), page_size=3),
            on_commit=kept.append,
        )
    assert kept == [datetime(2024, 5, 1, 10, tzinfo=UTC)]  # page 1 only
    assert len(repo.consent_history("hubspot:102")) == 1
    if not isinstance(repo.store, MemoryRepository):  # memory applies at once (documented)
        # Page 2 rolled back whole: no attribute, no opt-out, no dead letter of it.
        for contact in ("hubspot:104", "hubspot:105"):
            with pytest.raises(NotFoundError):
                repo.attributes(contact)
        assert [d.field for d in repo.dead_letters()] == ["email"]

    # The rerun asks for records modified at or after the kept watermark, less 5 minutes.
    pool = ReplayPool((200, "hubspot_search_resume"))
    resumed = import_source(repo, mapping, HubSpotSource(hubspot_client(pool)), since=kept[-1])
    (body,) = (b for _, _, b, _ in pool.sent)
    assert body["filterGroups"] == [
        {
            "filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "1714557300000"}
            ]
        }
    ]
    assert resumed.watermark == datetime(2024, 5, 3, 12, tzinfo=UTC)
    # No duplicates: one opt-out each, each refused record kept once, no repeated values.
    assert len(repo.consent_history("hubspot:102")) == 1
    assert len(repo.consent_history("hubspot:105")) == 1
    assert sorted(d.field for d in repo.dead_letters()) == ["email", "hs_email_optout"]
    assert repo.attributes("hubspot:104")["email"] == "riku@example.org"
    for contact in ("hubspot:101", "hubspot:102", "hubspot:104"):
        history = repo.attribute_history(contact)
        assert len(history) == len(repo.attributes(contact))


@pytest.mark.parametrize(("lookback", "skipped"), [(timedelta(minutes=5), 0), (timedelta(0), 1)])
def test_a_record_that_arrived_late_is_read_within_the_lookback(
    lookback: timedelta, skipped: int
) -> None:
    # 102 was modified at 10:00 but reached the search index after a run that kept
    # 10:03 as its watermark: the next run's overlap still stores it.
    repo = CommHistory(MemoryRepository())
    pool = ReplayPool((200, "hubspot_search_resume"))
    since = datetime(2024, 5, 1, 10, 3, tzinfo=UTC)
    source = HubSpotSource(hubspot_client(pool), lookback=lookback)
    report = import_source(repo, CrmMapping.preset("hubspot", api=True), source, since=since)
    start = int((since - lookback).timestamp() * 1000)
    assert pool.sent[0][2]["filterGroups"][0]["filters"][0]["value"] == str(start)
    assert report.skipped == skipped
    if skipped:
        with pytest.raises(NotFoundError):
            repo.consent_history("hubspot:102")
    else:
        assert len(repo.consent_history("hubspot:102")) == 1
    assert report.watermark == datetime(2024, 5, 3, 12, tzinfo=UTC)


def test_hubspot_http_error_is_typed_and_value_free() -> None:
    repo = CommHistory(MemoryRepository())
    pool = ReplayPool((200, "hubspot_search_page1"), (500, None))
    kept: list[datetime] = []
    with pytest.raises(CrmApiError) as info:
        import_source(
            repo,
            CrmMapping.preset("hubspot", api=True),
            HubSpotSource(hubspot_client(pool), page_size=3),
            on_commit=kept.append,
        )
    assert (info.value.crm, info.value.status) == ("hubspot", 500)
    assert "internal error" not in str(info.value)  # the body is not carried
    assert kept == [datetime(2024, 5, 1, 10, tzinfo=UTC)]


def test_hubspot_starts_a_new_search_at_the_10000_result_limit() -> None:
    # The search API refuses to page past 10,000 results of one query: the source
    # asks again from the newest time it has given (those records repeat, harmlessly).
    first = _fixture("hubspot_search_page1")
    first["paging"]["next"]["after"] = "10000"
    pool = ReplayPool((200, first), (200, "hubspot_search_page2"))
    repo = CommHistory(MemoryRepository())
    mapping = CrmMapping.preset("hubspot", api=True)
    report = import_source(repo, mapping, HubSpotSource(hubspot_client(pool), page_size=3))
    second = pool.sent[1][2]
    assert "after" not in second
    assert second["filterGroups"][0]["filters"][0] == {
        "propertyName": "lastmodifieddate",
        "operator": "GTE",
        "value": "1714636800000",  # 2024-05-02T08:00Z, the newest of page 1
    }
    assert report.imported == 4

    # No progress (every record at the watermark): a typed error, not a loop.
    stuck = {"total": 20000, "results": first["results"][2:], "paging": first["paging"]}
    pool = ReplayPool((200, stuck), (200, stuck))
    since = datetime(2024, 5, 2, 8, tzinfo=UTC)
    with pytest.raises(CrmApiError, match="10,000 records share one modified time"):
        import_source(repo, mapping, HubSpotSource(hubspot_client(pool)), since=since)


# ---------------------------------------------------------------------- Salesforce


def test_salesforce_pages_through_next_records_url(repo: CommHistory[Any]) -> None:
    adapter = ReplayAdapter((200, "salesforce_query_page1"), (200, "salesforce_query_page2"))
    mapping = CrmMapping.preset("salesforce", api=True)
    kept: list[datetime] = []
    report = import_source(
        repo, mapping, SalesforceSource(salesforce_client(adapter)), on_commit=kept.append
    )
    first, second = adapter.sent
    assert urlsplit(str(first.url)).path == "/services/data/v59.0/query/"
    assert _soql(first) == (
        "SELECT Id, SystemModstamp, FirstName, LastName, Email, Phone, MobilePhone, "
        "CreatedDate, HasOptedOutOfEmail, DoNotCall FROM Contact "
        "ORDER BY SystemModstamp ASC, Id ASC"
    )
    assert first.headers["Authorization"] == "Bearer test-session"
    assert str(second.url) == f"{INSTANCE}/services/data/v59.0/query/01gD0000002HU6KIAW-2"

    assert (report.rows, report.imported, report.rejected, report.withdrawals) == (4, 3, 1, 2)
    assert kept == [datetime(2024, 4, 2, 10, tzinfo=UTC), datetime(2024, 4, 4, 11, 45, tzinfo=UTC)]
    a = "salesforce:0035g00000XyZaAAAR"
    b = "salesforce:0035g00000XyZbAAAR"
    d = "salesforce:0035g00000XyZdAAAR"
    assert [e.channel for e in repo.consent_history(a)] == [Channel.VOICE]  # DoNotCall
    (email_out,) = repo.consent_history(b)
    assert (email_out.channel, email_out.source) == (
        Channel.EMAIL,
        "salesforce api: HasOptedOutOfEmail",
    )
    assert repo.attributes(b)["mobile_phone"] == "+818022223333"
    assert repo.attributes(a)["phone"] == "+81312345678"
    assert "first_name" not in repo.attributes(d)  # null: left as is
    (error,) = report.errors
    assert (error.line, error.record, error.field, error.reason) == (
        3,
        "0035g00000XyZcAAAR",
        "Phone",
        "expected text",
    )
    (letter,) = repo.dead_letters()
    assert (letter.source, letter.field) == ("salesforce api", "Phone")


def test_salesforce_resumes_after_an_http_failure_on_page_two(repo: CommHistory[Any]) -> None:
    mapping = CrmMapping.preset("salesforce", api=True)
    adapter = ReplayAdapter((200, "salesforce_query_page1"), (500, None))
    kept: list[datetime] = []
    with pytest.raises(CrmApiError) as info:
        import_source(
            repo, mapping, SalesforceSource(salesforce_client(adapter)), on_commit=kept.append
        )
    assert (info.value.crm, info.value.status) == ("salesforce", 500)
    assert "SERVER_UNAVAILABLE" not in str(info.value)
    assert kept == [datetime(2024, 4, 2, 10, tzinfo=UTC)]
    with pytest.raises(NotFoundError):
        repo.consent_history("salesforce:0035g00000XyZdAAAR")  # page 2 was never read

    adapter = ReplayAdapter((200, "salesforce_query_resume"))
    resumed = import_source(
        repo, mapping, SalesforceSource(salesforce_client(adapter)), since=kept[-1]
    )
    (request,) = adapter.sent
    assert "WHERE SystemModstamp >= 2024-04-02T09:55:00Z ORDER BY" in _soql(request)
    assert (resumed.rows, resumed.imported, resumed.rejected) == (3, 2, 1)
    assert len(repo.consent_history("salesforce:0035g00000XyZbAAAR")) == 1  # read twice, kept once
    assert len(repo.consent_history("salesforce:0035g00000XyZaAAAR")) == 1
    assert repo.attributes("salesforce:0035g00000XyZdAAAR")["last_name"] == "Goto"
    assert len(repo.dead_letters()) == 1

    # Run again from the new watermark: nothing changes.
    adapter = ReplayAdapter((200, "salesforce_query_resume"))
    again = import_source(
        repo, mapping, SalesforceSource(salesforce_client(adapter)), since=resumed.watermark
    )
    assert again.skipped == 2  # older than the watermark (the server's filter is to the second)
    assert len(repo.dead_letters()) == 1
    assert len(repo.consent_history("salesforce:0035g00000XyZbAAAR")) == 1


def test_soql_refuses_names_that_are_not_fields() -> None:
    mapping = CrmMapping.from_json(
        {"crm": "salesforce", "id": "Id", "modified": "SystemModstamp",
         "attributes": [{"column": "Email FROM User --", "attribute": "e", "personal": True}]}
    )  # fmt: skip
    source = SalesforceSource(client=None)
    with pytest.raises(InvalidInputError) as info:
        source.soql(mapping, None)
    assert info.value.field == "Email FROM User --"
    with pytest.raises(InvalidInputError, match="object name"):
        SalesforceSource(client=None, sobject="Contact; x").soql(
            CrmMapping.preset("salesforce", api=True), None
        )


# ---------------------------------------------------------------------- the rows


def test_personal_values_from_the_api_are_not_stored_in_the_clear(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    with open_repository(f"sqlite:///{db}", Keyring.generate()) as repo:
        pool = ReplayPool((200, "hubspot_search_page1"), (200, "hubspot_search_page2"))
        import_source(
            repo, CrmMapping.preset("hubspot", api=True), HubSpotSource(hubspot_client(pool))
        )
    raw = db.read_bytes()
    for secret in (b"Sato", b"not-an-email", b"riku@example.org", b"+819012345678"):
        assert secret not in raw


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=4,
)


FIELDS = ["Id", "SystemModstamp", "Email", "DoNotCall", "CreatedDate", "Phone", "Other"]


@given(st.dictionaries(st.sampled_from(FIELDS), json_values))
def test_api_rows_raise_only_typed_errors(record: dict[str, Any]) -> None:
    mapping = CrmMapping.preset("salesforce", api=True)
    row = api_row(record, mapping)
    error: CrmRowError | None = None
    try:
        parsed = parse_row(mapping, row, line=4, origin="api")
    except CrmRowError as exc:
        error = exc
    if error is not None:
        assert error.line == 4
        assert error.field in FIELDS[:-1] or error.field == "<row>"
        assert str(error).startswith(f"4: {error.field}: ")
    else:
        assert parsed.contact_id == f"salesforce:{str(record['Id']).strip()}"


def test_api_row_cells() -> None:
    mapping = CrmMapping.preset("salesforce", api=True)
    row = api_row({"Id": "003", "DoNotCall": True, "HasOptedOutOfEmail": False,
                   "Phone": None, "Other": 5}, mapping)  # fmt: skip
    assert row["DoNotCall"] == "true"
    assert row["HasOptedOutOfEmail"] == "false"
    assert row["Phone"] == ""
    assert row["Other"] == "5"
    assert row["Email"] == ""  # left out: blank
    assert row["SystemModstamp"] is None  # required: missing, so the record is refused
    with pytest.raises(CrmRowError, match="SystemModstamp: missing column"):
        parse_row(mapping, row, line=1)


def test_a_record_without_its_id_is_refused_and_the_import_goes_on() -> None:
    page = _fixture("salesforce_query_page2")
    del page["records"][1]["Id"]
    repo = CommHistory(MemoryRepository())
    report = import_source(
        repo,
        CrmMapping.preset("salesforce", api=True),
        SalesforceSource(salesforce_client(ReplayAdapter((200, page)))),
    )
    assert [(e.line, e.field, e.reason, e.record) for e in report.errors] == [
        (1, "Phone", "expected text", "0035g00000XyZcAAAR"),
        (2, "Id", "missing column", None),
    ]
    assert report.imported == 0


# ---------------------------------------------------------------------- extras and credentials


@pytest.mark.parametrize(
    ("api", "module", "extra", "package"),
    [
        ("hubspot", "hubspot", "hubspot", "hubspot-api-client"),
        ("salesforce", "simple_salesforce", "salesforce", "simple-salesforce"),
    ],
)
def test_a_missing_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, api: str, module: str, extra: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(MissingExtraError) as info:
        source_from_env(api, {})
    assert (info.value.extra, info.value.package) == (extra, package)
    assert str(info.value) == f"{package} is not installed: pip install 'commhistory[{extra}]'"
    assert isinstance(info.value, ImportError)
    source: Any = HubSpotSource(None) if api == "hubspot" else SalesforceSource(None)
    with pytest.raises(MissingExtraError):
        next(iter(source.pages(CrmMapping.preset(api, api=True), None)))


def test_errors_pickle() -> None:
    for error in (
        MissingExtraError(extra="hubspot", package="hubspot-api-client"),
        CrmApiError(crm="salesforce", status=401, reason="SalesforceExpiredSession"),
        CrmRowError(field="email", reason="missing '@'", line=3, record="103"),
    ):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error)
        assert str(back) == str(error)


def test_credentials_come_from_the_environment() -> None:
    with pytest.raises(InvalidInputError) as info:
        source_from_env("hubspot", {"COMMHISTORY_HUBSPOT_TOKEN": " "})
    assert (info.value.field, info.value.reason) == ("COMMHISTORY_HUBSPOT_TOKEN", "not set")
    with pytest.raises(InvalidInputError, match="COMMHISTORY_SALESFORCE_TOKEN"):
        source_from_env("salesforce", {"COMMHISTORY_SALESFORCE_USERNAME": "u"})
    hub = source_from_env("hubspot", {"COMMHISTORY_HUBSPOT_TOKEN": "pat-na1-secret"})
    assert isinstance(hub, HubSpotSource)
    assert "secret" not in repr(hub)
    sf = source_from_env(
        "salesforce",
        {"COMMHISTORY_SALESFORCE_INSTANCE_URL": INSTANCE, "COMMHISTORY_SALESFORCE_TOKEN": "00D!x"},
    )
    assert isinstance(sf, SalesforceSource)
    assert sf.client.session_id == "00D!x"
    assert "00D!x" not in repr(sf)


# ---------------------------------------------------------------------- the command


def test_cli_api_keeps_its_watermark_and_never_prints_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hubspot

    pool = ReplayPool(
        (200, "hubspot_search_page1"),
        (200, "hubspot_search_page2"),
        (200, "hubspot_search_resume"),
        (200, {"total": 0, "results": []}),
    )
    tokens: list[str] = []

    def fake_hubspot(*, access_token: str) -> Any:
        tokens.append(access_token)
        return hubspot_client(pool)

    monkeypatch.setattr(hubspot, "HubSpot", fake_hubspot)
    monkeypatch.setenv("COMMHISTORY_HUBSPOT_TOKEN", "pat-na1-s3cret")
    db = f"sqlite:///{tmp_path / 'c.db'}"
    store = ["--db", db, "--keyring", str(tmp_path / "k.keyring")]
    assert main(["init", *store]) == 0
    capsys.readouterr()
    args = ["crm-import", "--api", "hubspot", *store]
    assert main([*args, "--format", "json"]) == 1  # two records refused
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert (doc["imported"], doc["rejected"], doc["withdrawals"]) == (4, 2, 2)
    assert doc["errors"][0] == {
        "line": 3, "column": "email", "reason": doc["errors"][0]["reason"], "record": "103"
    }  # fmt: skip
    assert tokens == ["pat-na1-s3cret"]
    assert "s3cret" not in out.out + out.err
    state = json.loads((tmp_path / "c.db.crm-state.json").read_text(encoding="utf-8"))
    assert state == {"hubspot:api": "2024-05-03T12:00:00Z"}

    assert main(args) == 1
    out = capsys.readouterr()
    # The recorded answer holds older records too: the importer skips them as well.
    assert out.out.startswith("hubspot api: 5 rows: 1 imported, 3 skipped")
    assert "row 5 (record 106): hs_email_optout: expected true or false" in out.out
    assert "s3cret" not in out.out + out.err
    filters = pool.sent[-1][2]["filterGroups"][0]["filters"]
    assert filters[0]["value"] == "1714737300000"  # 2024-05-03T12:00Z less the lookback

    # --since replaces the kept watermark for one run.
    assert main([*args, "--since", "2024-01-01T00:00:00Z"]) == 0
    assert capsys.readouterr().out.startswith("hubspot api: 0 rows: 0 imported")
    filters = pool.sent[-1][2]["filterGroups"][0]["filters"]
    assert filters[0]["value"] == "1704066900000"  # 2024-01-01T00:00Z less the lookback


def test_cli_api_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ["--db", f"sqlite:///{tmp_path / 'c.db'}", "--keyring", str(tmp_path / "k")]
    assert main(["init", *store]) == 0
    monkeypatch.delenv("COMMHISTORY_HUBSPOT_TOKEN", raising=False)
    assert main(["crm-import", "--api", "hubspot", *store]) == 2
    assert "COMMHISTORY_HUBSPOT_TOKEN: not set" in capsys.readouterr().err
    assert main(["crm-import", "--api", "hubspot", "--preset", "salesforce", *store]) == 2
    assert "does not read the hubspot API" in capsys.readouterr().err
    assert main(["crm-import", "--preset", "hubspot", *store]) == 2
    assert "FILE or --api" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "simple_salesforce", None)
    assert main(["crm-import", "--api", "salesforce", *store]) == 2
    assert "pip install 'commhistory[salesforce]'" in capsys.readouterr().err
