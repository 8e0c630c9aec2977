"""The worked example of docs/worked-example.md: from a HubSpot export to ROI in DuckDB.

    python examples/worked_example.py [DATABASE_URL [OUT_DIR]]

Imports the contacts of ``hubspot-contacts.csv`` (HubSpot's contacts export),
sends two e-mail campaigns to them, records their purchases and the campaigns'
costs, prints the ROI per campaign, exports the analytics dataset as Parquet
and computes the same numbers from the Parquet files with DuckDB. Without
arguments it works in a new SQLite file under a temporary directory.

The test suite runs it on SQLite and on PostgreSQL and checks that its output
is the one the page shows (tests/test_worked_example.py). It needs the
``analytics`` extra (pyarrow) and ``duckdb``.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from commhistory import (
    Activity,
    Channel,
    CommHistory,
    ConsentState,
    Direction,
    Event,
    EventType,
    KeyProvider,
    Keyring,
    Message,
    open_repository,
)
from commhistory.contacts.crm import CrmMapping, import_rows, read_export
from commhistory.kpi import Cost

HERE = Path(__file__).resolve().parent
EXPORT = HERE / "hubspot-contacts.csv"
SENT_AT = {
    "spring-sale": datetime(2025, 4, 1, 9, tzinfo=UTC),
    "vip-preview": datetime(2025, 4, 3, 9, tzinfo=UTC),
}
CLICKED = {"spring-sale": {"101", "102"}, "vip-preview": {"103", "105"}}
PURCHASES = [  # order id, HubSpot record id, yen, when
    ("order-1001", "101", "12000", datetime(2025, 4, 1, 15, tzinfo=UTC)),
    ("order-1002", "102", "3000", datetime(2025, 4, 2, 10, tzinfo=UTC)),
    ("order-1003", "103", "25000", datetime(2025, 4, 3, 14, tzinfo=UTC)),
    ("order-1004", "104", "4000", datetime(2025, 4, 3, 18, tzinfo=UTC)),
    ("order-1005", "105", "8000", datetime(2025, 4, 4, 20, tzinfo=UTC)),
]


def import_contacts(repo: CommHistory[Any]) -> list[str]:
    """Import the HubSpot export; return the contact ids."""
    with EXPORT.open(encoding="utf-8", newline="") as export:
        report = import_rows(
            repo, CrmMapping.preset("hubspot"), read_export(export), source=EXPORT.name
        )
    print(f"imported {report.imported} contacts, {report.withdrawals} opt-out")
    with EXPORT.open(encoding="utf-8", newline="") as export:
        return [f"hubspot:{row['Record ID']}" for _, row, _ in read_export(export)]


def send_campaigns(repo: CommHistory[Any], contacts: list[str]) -> None:
    """Send two campaigns and record what the ESP reported back."""
    messages, events = [], []
    for campaign, sent_at in SENT_AT.items():
        for contact in contacts:
            if repo.consent.status(contact, "email", "marketing").state is ConsentState.WITHDRAWN:
                continue  # unsubscribed in HubSpot
            attributes = repo.attributes(contact)
            if campaign == "vip-preview" and attributes["lifecycle_stage"] != "customer":
                continue
            message_id = f"{campaign}/{contact}"
            messages.append(
                Message(
                    message_id=message_id, channel=Channel.EMAIL, direction=Direction.OUTBOUND,
                    contact_id=contact, address=str(attributes["email"]), sent_at=sent_at,
                    campaign_id=campaign,
                )
            )  # fmt: skip
            # In production these come from the ESP's webhooks.
            events.append(
                Event(
                    event_id=f"{message_id}/delivered", type=EventType.DELIVERED,
                    message_id=message_id, occurred_at=sent_at + timedelta(minutes=1),
                )
            )  # fmt: skip
            if contact.removeprefix("hubspot:") in CLICKED[campaign]:
                events.append(
                    Event(
                        event_id=f"{message_id}/clicked", type=EventType.CLICKED,
                        message_id=message_id, occurred_at=sent_at + timedelta(hours=2),
                    )
                )  # fmt: skip
    repo.record_messages(messages)
    repo.record_events(events)
    print(f"sent {len(messages)} messages, {len(events)} events")


def record_purchases(repo: CommHistory[Any]) -> None:
    """Record the shop's orders; an attributed order converts the message clicked."""
    repo.declare_activities({"purchase": []})
    repo.record_activities(
        Activity(
            activity_id=order, contact_id=f"hubspot:{record}", name="purchase",
            occurred_at=at, revenue=Decimal(yen), currency="JPY",
        )
        for order, record, yen, at in PURCHASES
    )  # fmt: skip
    conversions = [
        Event(
            event_id=entry.activity.activity_id, type=EventType.CONVERTED,
            message_id=entry.message_id, occurred_at=entry.activity.occurred_at,
            revenue=entry.activity.revenue, currency=entry.activity.currency,
        )
        for _, record, _, _ in PURCHASES
        for entry in repo.activities(f"hubspot:{record}", names=["purchase"])
        if entry.message_id is not None
    ]  # fmt: skip
    repo.record_events(conversions)
    print(f"{len(PURCHASES)} purchases, {len(conversions)} attributed to a campaign")


def record_costs(repo: CommHistory[Any]) -> None:
    """Record what each campaign cost."""
    april, may = datetime(2025, 4, 1, tzinfo=UTC), datetime(2025, 5, 1, tzinfo=UTC)
    repo.record_costs(
        [
            Cost(cost_id="spring-sale/esp", campaign_id="spring-sale", amount=Decimal(10000),
                 currency="JPY", starts_at=april, ends_at=may),
            Cost(cost_id="vip-preview/esp", campaign_id="vip-preview", amount=Decimal(20000),
                 currency="JPY", starts_at=april, ends_at=may),
        ]
    )  # fmt: skip


HEADER = "campaign      sent  clicks  conversions  revenue    cost   ROI"


def line(row: tuple[str, int, int, int, Decimal, Decimal, float]) -> str:
    """One row of the ROI table."""
    campaign, sent, clicks, conversions, revenue, cost, roi = row
    return (
        f"{campaign:<12} {sent:>5} {clicks:>7} {conversions:>12} "
        f"{revenue:>8,} {cost:>7,} {roi:>5.2f}"
    )


def print_roi(repo: CommHistory[Any]) -> None:
    """Print the ROI per campaign, as ``repo.kpis`` computes it in the database."""
    print("ROI per campaign, by repo.kpis:")
    print(HEADER)
    for row in repo.kpis(by="campaign_id"):
        print(
            line(
                (
                    str(row.group["campaign_id"]), row.sent, row.unique_clicks,
                    row.conversions, row.revenue["JPY"], row.cost["JPY"], row.roi["JPY"] or 0.0,
                )
            )
        )  # fmt: skip


ROI_SQL = """
WITH per_message AS (
    SELECT m.campaign_id, m.message_id,
        count(*) FILTER (e.type = 'rejected') > 0 AS rejected,
        count(*) FILTER (e.type IN ('bounced', 'failed')) > 0 AS undelivered,
        count(*) FILTER (e.type = 'clicked' AND NOT e.machine) > 0 AS clicked,
        count(*) FILTER (e.type = 'converted' AND NOT e.machine) > 0 AS converted,
        coalesce(sum(e.revenue_micros) FILTER (
            e.type = 'converted' AND NOT e.machine AND e.currency = 'JPY'), 0) AS revenue
    FROM messages m LEFT JOIN events e USING (message_id)
    WHERE m.direction = 'outbound'
    GROUP BY ALL
), per_campaign AS (
    SELECT campaign_id, count(*) AS sent,
        count(*) FILTER (NOT undelivered AND clicked) AS clicks,
        count(*) FILTER (NOT undelivered AND converted) AS conversions,
        sum(revenue) FILTER (NOT undelivered) AS revenue
    FROM per_message WHERE NOT rejected
    GROUP BY campaign_id
), cost AS (
    SELECT campaign_id, sum(amount_micros) AS cost
    FROM costs WHERE currency = 'JPY'
    GROUP BY campaign_id
)
SELECT campaign_id, sent, clicks, conversions, revenue, cost,
    (revenue - cost) / cost AS roi
FROM per_campaign JOIN cost USING (campaign_id)
ORDER BY campaign_id
"""


def export_and_query(repo: CommHistory[Any], out: Path) -> list[tuple[Any, ...]]:
    """Export the analytics dataset as Parquet, then compute the ROI from it with DuckDB."""
    report = repo.export_analytics(out, format="parquet")
    print(", ".join(f"{n} {table}" for table, n in report.rows.items()), "exported")
    con = duckdb.connect()
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):  # one view per table
        con.execute(
            f"CREATE VIEW {folder.name} AS SELECT * FROM read_parquet("  # noqa: S608 - our names
            f"'{folder}/**/*.parquet', hive_partitioning = true, union_by_name = true)"
        )
    rows = con.execute(ROI_SQL).fetchall()
    print("ROI per campaign, by DuckDB from the Parquet files:")
    print(HEADER)
    for campaign, sent, clicks, conversions, revenue, cost, roi in rows:
        yen = Decimal(revenue) / 1_000_000, Decimal(cost) / 1_000_000
        print(line((campaign, sent, clicks, conversions, *yen, roi)))
    purchases_by_stage(con)
    return rows


STAGE_SQL = """
SELECT stage.value_text AS lifecycle_stage, count(*) AS purchases,
    sum(p.revenue_micros) // 1000000 AS revenue
FROM activities p
JOIN contact_attributes stage
    ON stage.contact = p.contact AND stage.name = 'lifecycle_stage'
    AND stage.valid_from <= p.occurred_at
    AND (stage.valid_to IS NULL OR stage.valid_to > p.occurred_at)
WHERE p.name = 'purchase' AND p.currency = 'JPY'
GROUP BY ALL ORDER BY ALL
"""


def purchases_by_stage(con: duckdb.DuckDBPyConnection) -> None:
    """Purchases per HubSpot lifecycle stage at the time of purchase, from the files."""
    print("purchases by lifecycle stage:")
    for stage, purchases, revenue in con.execute(STAGE_SQL).fetchall():
        print(f"  {stage:<10} {purchases} purchases, {revenue:,} yen")


def main(url: str, out: Path, keyring: KeyProvider) -> None:
    """Run the example against the database at *url*, exporting under *out*."""
    with open_repository(url, keyring, attribution_window=timedelta(days=7)) as repo:
        contacts = import_contacts(repo)
        send_campaigns(repo, contacts)
        record_purchases(repo)
        record_costs(repo)
        print_roi(repo)
        export_and_query(repo, out)


if __name__ == "__main__":
    work = Path(tempfile.mkdtemp(prefix="commhistory-example-"))
    main(
        sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{work / 'history.db'}",
        Path(sys.argv[2]) if len(sys.argv) > 2 else work / "lake",
        Keyring.generate(),
    )
