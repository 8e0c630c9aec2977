"""CRM import: HubSpot and Salesforce contact exports as attributes and opt-outs.

The sample exports in ``tests/payloads/crm/`` follow the providers' documented shapes:

* HubSpot contacts export (a view exported as CSV; columns are the property
  labels, "Record ID" is ``hs_object_id``): CRM API exports,
  https://developers.hubspot.com/docs/guides/api/crm/exports, and the property
  labels of https://knowledge.hubspot.com/crm-setup/set-up-your-import-file.
* Salesforce Contact (Data Loader export: API field names as headers, ISO
  8601 UTC times with milliseconds, ``true``/``false`` booleans): field reference,
  https://developer.salesforce.com/docs/platform/field-reference/references/field-reference/salesforce-field-reference-contact.html
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory.cli import main
from commhistory.contacts.attributes import AttributeSchema
from commhistory.contacts.crm import (
    CrmMapping,
    ImportTarget,
    import_rows,
    parse_row,
    read_export,
)
from commhistory.convert import ParsedLine
from commhistory.crypto import Keyring
from commhistory.errors import (
    CrmRowError,
    InvalidInputError,
    NotFoundError,
    PayloadError,
    StorageError,
)
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel, ConsentAction, ConsentMethod
from commhistory.store.memory import MemoryRepository

PAYLOADS = Path(__file__).parent / "payloads" / "crm"
HUBSPOT = PAYLOADS / "hubspot_contacts.csv"
SALESFORCE = PAYLOADS / "salesforce_contacts.csv"
BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def rows(path: Path) -> list[tuple[int, Any, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(read_export(f))


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


# ---------------------------------------------------------------------- the row parser


def test_hubspot_row_maps_attributes_addresses_and_opt_out() -> None:
    mapping = CrmMapping.preset("hubspot")
    (line, row, _raw), (line2, row2, _) = rows(HUBSPOT)[:2]
    first = parse_row(mapping, row, line=line)
    assert first.contact_id == "hubspot:51"
    assert first.line == 2
    assert first.modified_at == datetime(2024, 3, 2, 11, 20, tzinfo=UTC)
    assert first.update is not None
    values = first.update.attributes
    assert values["email"] == "Hana.Sato@example.jp"  # the domain is lower-cased
    assert values["phone"] == "+819012345678"
    assert values["first_name"] == "Hana"
    assert values["lifecycle_stage"] == "customer"
    assert values["crm_created_at"] == datetime(2024, 1, 10, 9, 15, tzinfo=UTC)
    assert first.withdrawals == ()
    second = parse_row(mapping, row2, line=line2)
    assert "phone" not in second.update.attributes  # type: ignore[union-attr]  # blank: left as is
    (w,) = second.withdrawals
    assert (w.channel, w.action, w.method) == (
        Channel.EMAIL,
        ConsentAction.WITHDRAW,
        ConsentMethod.IMPORT,
    )
    assert w.occurred_at == second.modified_at
    assert w.consent_id is not None
    assert w.consent_id.startswith("hubspot:")
    # Deterministic: the same row read again is the same event.
    assert parse_row(mapping, row2, line=line2).withdrawals[0].consent_id == w.consent_id


def test_salesforce_row_do_not_call_withdraws_voice() -> None:
    mapping = CrmMapping.preset("salesforce")
    (line, row, _), (line2, row2, _) = rows(SALESFORCE)[:2]
    first = parse_row(mapping, row, line=line)
    assert first.contact_id == "salesforce:0035g00000AbCdEAAV"
    assert [w.channel for w in first.withdrawals] == [Channel.VOICE]
    second = parse_row(mapping, row2, line=line2)
    assert [w.channel for w in second.withdrawals] == [Channel.EMAIL]
    assert second.update is not None
    assert second.update.attributes["email"] == "SORA@example.com"
    assert second.update.attributes["mobile_phone"] == "+818022223333"


@pytest.mark.parametrize(
    ("path", "index", "column", "reason"),
    [
        (HUBSPOT, 2, "Email", "@"),
        (HUBSPOT, 3, "Unsubscribed from all email", "true or false"),
        (SALESFORCE, 2, "LastModifiedDate", "ISO 8601"),
    ],
)
def test_bad_cells_are_typed_errors_naming_row_and_column(
    path: Path, index: int, column: str, reason: str
) -> None:
    mapping = CrmMapping.preset("hubspot" if path is HUBSPOT else "salesforce")
    line, row, _ = rows(path)[index]
    with pytest.raises(CrmRowError) as info:
        parse_row(mapping, row, line=line)
    assert (info.value.line, info.value.field) == (index + 2, column)
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{index + 2}: {column}: ")


def test_missing_and_blank_required_columns() -> None:
    mapping = CrmMapping.preset("hubspot")
    _, row, _ = rows(HUBSPOT)[0]
    with pytest.raises(CrmRowError, match="Record ID: missing column"):
        parse_row(mapping, {k: v for k, v in row.items() if k != "Record ID"}, line=2)
    with pytest.raises(CrmRowError, match="Last Modified Date"):
        parse_row(mapping, {**row, "Last Modified Date": ""}, line=2)
    with pytest.raises(CrmRowError, match="Record ID: expected a record id"):
        parse_row(mapping, {**row, "Record ID": "51 OR 1=1"}, line=2)


HEADERS = [
    "Record ID",
    "First Name",
    "Email",
    "Phone Number",
    "Create Date",
    "Last Modified Date",
    "Lifecycle Stage",
    "Marketing contact status",
    "Unsubscribed from all email",
    "Last Name",
]


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(HEADERS),
        st.one_of(
            st.none(),
            st.text(max_size=30),
            st.sampled_from(
                ["true", "no", "2024-03-01 08:00", "51", "a@b.jp", "+81 90-1234-5678"]
            ),
        ),
    )
)
def test_parse_row_raises_only_typed_errors(changes: dict[str, str | None]) -> None:
    mapping = CrmMapping.preset("hubspot")
    _, base, _ = rows(HUBSPOT)[0]
    row = {**base, **changes}
    error: CrmRowError | None = None
    try:
        parsed = parse_row(mapping, row, line=7)
    except CrmRowError as exc:
        error = exc
    if error is not None:
        assert error.line == 7
        assert error.field in {*HEADERS, "<row>"}
        assert str(error).startswith(f"7: {error.field}: ")
    else:
        assert parsed.contact_id == f"hubspot:{str(row['Record ID']).strip()}"
        assert len(parsed.withdrawals) <= 1


# ---------------------------------------------------------------------- mapping files


def test_mapping_file_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(PayloadError, match="unknown key"):
        CrmMapping.from_json({"crm": "x", "id": "Id", "modified": "M", "colour": 1})
    with pytest.raises(PayloadError, match="channel"):
        CrmMapping.from_json(
            {
                "crm": "x",
                "id": "Id",
                "modified": "M",
                "consent": [{"column": "C", "channel": "fax"}],
            }
        )
    with pytest.raises(PayloadError, match="normalize"):
        CrmMapping.from_json(
            {
                "crm": "x",
                "id": "Id",
                "modified": "M",
                "attributes": [{"column": "E", "attribute": "e", "normalize": "email"}],
            }
        )
    with pytest.raises(PayloadError, match="time zone"):
        CrmMapping.from_json({"crm": "x", "id": "Id", "modified": "M", "timezone": "Mars/Base"})
    with pytest.raises(InvalidInputError, match="preset"):
        CrmMapping.preset("pipedrive")
    bad = tmp_path / "m.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(PayloadError, match="invalid JSON"):
        CrmMapping.load(bad)


def test_presets_declare_addresses_as_personal() -> None:
    for name in ("hubspot", "salesforce"):
        schema = CrmMapping.preset(name).schema
        assert schema["email"].personal
        assert schema["phone"].personal
        assert schema["first_name"].personal
        assert not schema["crm_created_at"].personal


# ---------------------------------------------------------------------- storage


def test_import_is_idempotent_incremental_and_keeps_dead_letters(
    repo: CommHistory[Any], tmp_path: Path
) -> None:
    mapping = CrmMapping.preset("hubspot")
    first = import_rows(repo, mapping, rows(HUBSPOT), source="hubspot.csv")
    assert (first.rows, first.imported, first.rejected, first.withdrawals) == (4, 2, 2, 1)
    assert first.watermark == datetime(2024, 3, 2, 11, 20, tzinfo=UTC)
    assert repo.attributes("hubspot:51")["email"] == "Hana.Sato@example.jp"
    assert repo.masked_attributes("hubspot:51")["email"] is None  # personal: encrypted
    assert repo.masked_attributes("hubspot:51")["lifecycle_stage"] == "customer"
    assert [e.action for e in repo.consent_history("hubspot:52")] == [ConsentAction.WITHDRAW]
    letters = repo.dead_letters()
    assert sorted((d.line, d.field) for d in letters) == [
        (4, "Email"),
        (5, "Unsubscribed from all email"),
    ]
    # Rows 53 and 54 were refused whole: no contact, no consent.
    with pytest.raises(NotFoundError):
        repo.consent_history("hubspot:53")

    again = import_rows(repo, mapping, rows(HUBSPOT), source="hubspot.csv", since=first.watermark)
    assert (again.skipped, again.imported) == (1, 1)  # 52 is older; 51 sits at the watermark
    assert again.rejected == 2  # 53 and 54 are newer than the watermark: read again ...
    assert len(repo.dead_letters()) == 2  # ... and kept once
    assert len(repo.consent_history("hubspot:52")) == 1
    assert len(repo.attribute_history("hubspot:51")) == len(list(repo.attributes("hubspot:51")))

    newer = tmp_path / "newer.csv"
    text = HUBSPOT.read_text(encoding="utf-8").replace(
        "2024-03-02 11:20,customer", "2024-05-01 00:00,evangelist"
    )
    newer.write_text(text, encoding="utf-8")
    third = import_rows(repo, mapping, rows(newer), source="newer.csv", since=first.watermark)
    assert third.watermark == datetime(2024, 5, 1, tzinfo=UTC)
    assert repo.attributes("hubspot:51")["lifecycle_stage"] == "evangelist"
    assert (
        repo.attributes("hubspot:51", at=datetime(2024, 4, 1, tzinfo=UTC))["lifecycle_stage"]
        == "customer"
    )


def test_personal_values_are_not_stored_in_the_clear(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    with open_repository(f"sqlite:///{db}", Keyring.generate()) as repo:
        import_rows(repo, CrmMapping.preset("salesforce"), rows(SALESFORCE), source="sf.csv")
        assert repo.attributes("salesforce:0035g00000AbCdEAAV")["last_name"] == "Kato"
    raw = db.read_bytes()
    for secret in (b"Kato", b"mei.kato", b"+81312345678", b"Endo"):
        assert secret not in raw


class _FailingSecondBatch:
    """A target whose second write batch fails after the first committed."""

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


def test_a_failed_batch_leaves_nothing_and_the_watermark_where_it_was(
    repo: CommHistory[Any],
) -> None:
    mapping = CrmMapping.preset("salesforce")
    good = rows(SALESFORCE)[:2]  # 0035...E at 04-01 (DoNotCall), 0035...F at 04-02 (email opt-out)
    kept: list[datetime] = []
    target: ImportTarget = _FailingSecondBatch(repo)
    with pytest.raises(StorageError):
        import_rows(target, mapping, good, source="sf.csv", batch_size=1, on_commit=kept.append)
    assert kept == [datetime(2024, 4, 1, 10, tzinfo=UTC)]
    assert len(repo.consent_history("salesforce:0035g00000AbCdEAAV")) == 1
    if not isinstance(repo.store, MemoryRepository):  # memory applies at once (documented)
        # The second batch rolled back whole: neither its attributes nor its opt-out.
        with pytest.raises(NotFoundError):
            repo.consent_history("salesforce:0035g00000AbCdFAAV")
    resumed = import_rows(repo, mapping, good, source="sf.csv", since=kept[-1], batch_size=1)
    assert resumed.watermark == datetime(2024, 4, 2, 10, tzinfo=UTC)
    assert len(repo.consent_history("salesforce:0035g00000AbCdEAAV")) == 1  # not twice
    assert len(repo.consent_history("salesforce:0035g00000AbCdFAAV")) == 1
    assert repo.attributes("salesforce:0035g00000AbCdFAAV")["first_name"] == "Sora"


def test_a_header_without_the_id_column_stops_the_import() -> None:
    repo = CommHistory(MemoryRepository())
    mapping = CrmMapping.preset("hubspot")
    with pytest.raises(PayloadError, match="Record ID: missing column in the header"):
        import_rows(repo, mapping, rows(SALESFORCE), source="wrong.csv")


# ---------------------------------------------------------------------- the command


def test_cli_keeps_the_watermark_next_to_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    store = ["--db", db, "--keyring", str(tmp_path / "k.keyring")]
    assert main(["init", *store]) == 0
    capsys.readouterr()
    args = ["crm-import", "--preset", "salesforce", *store, "--format", "json", str(SALESFORCE)]
    assert main(args) == 1  # one row refused
    doc = json.loads(capsys.readouterr().out)
    assert (doc["imported"], doc["rejected"], doc["withdrawals"]) == (2, 1, 2)
    assert doc["errors"] == [
        {"line": 4, "column": "LastModifiedDate", "reason": doc["errors"][0]["reason"]}
    ]
    state = json.loads((tmp_path / "c.db.crm-state.json").read_text(encoding="utf-8"))
    assert state == {"salesforce": "2024-04-02T10:00:00Z"}
    assert main(args) == 1
    doc = json.loads(capsys.readouterr().out)
    assert (doc["skipped"], doc["imported"], doc["withdrawals"]) == (1, 1, 1)
    assert main([*args, "--full"]) == 1
    assert json.loads(capsys.readouterr().out)["skipped"] == 0


def test_cli_map_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mapping = {
        "crm": "legacy",
        "id": "Id",
        "modified": "LastModifiedDate",
        "attributes": [{"column": "FirstName", "attribute": "given_name", "personal": True}],
        "consent": [{"column": "HasOptedOutOfEmail", "channel": "email"}],
    }
    path = tmp_path / "map.json"
    path.write_text(json.dumps(mapping), encoding="utf-8")
    store = ["--db", f"sqlite:///{tmp_path / 'c.db'}", "--keyring", str(tmp_path / "k")]
    assert main(["init", *store]) == 0
    state = tmp_path / "state.json"
    code = main(["crm-import", "--map-file", str(path), "--state", str(state), *store,
                 str(SALESFORCE)])  # fmt: skip
    assert code == 1
    out = capsys.readouterr().out
    assert "2 imported" in out
    assert "line 4: LastModifiedDate:" in out
    assert "Kato" not in out
    assert "Mei" not in out
    assert "legacy" in json.loads(state.read_text(encoding="utf-8"))


def test_cli_needs_write_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--db", f"sqlite:///{tmp_path / 'c.db'}", "--keyring", str(tmp_path / "k")]
    assert main(["init", *store]) == 0
    actor = ["--actor", "alice", "--role", "analyst", "--purpose", "crm sync"]
    assert main(["crm-import", "--preset", "hubspot", *store, *actor, str(HUBSPOT)]) == 6
    assert "write_history" in capsys.readouterr().err
    assert not (tmp_path / "c.db.crm-state.json").exists()


def test_broken_csv_is_a_payload_error_with_its_line() -> None:
    huge = "x" * 200_000  # over the csv module's cell size limit
    text = f"Record ID,Last Modified Date\n51,2024-03-01 08:00\n52,{huge}\n"
    found = read_export(io.StringIO(text))
    assert next(found)[0] == 2
    with pytest.raises(PayloadError) as info:
        next(found)
    assert (info.value.field, info.value.line) == ("<line>", 3)
    assert "xxx" not in str(info.value)
    with pytest.raises(PayloadError, match="repeats"):
        list(read_export(io.StringIO("Id,Id\n1,2\n")))
