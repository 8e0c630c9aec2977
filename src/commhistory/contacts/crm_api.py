"""CRM import from the HubSpot and Salesforce REST APIs, page by page.

:class:`HubSpotSource` and :class:`SalesforceSource` are
:class:`~commhistory.contacts.crm.CrmSource` s: they read the contacts
modified at or after the watermark through the CRM's own Python client
(``hubspot-api-client``, the ``hubspot`` extra; ``simple-salesforce``, the
``salesforce`` extra) and yield each page of records as the same
``{column: cell}`` rows an export gives, so the same
:class:`~commhistory.contacts.crm.CrmMapping` (with the CRM's API field names:
``CrmMapping.preset("hubspot", api=True)``), the same consent rule, the same
dead letters and the same watermark apply
(:func:`~commhistory.contacts.crm.import_source`).

The incremental query filters and sorts on the mapping's *modified* field:

* HubSpot: the CRM search API, ``POST /crm/v3/objects/contacts/search`` with
  ``lastmodifieddate GTE <watermark>``, sorted ascending, paged by
  ``paging.next.after``. The search API stops at 10,000 results per query;
  past that the source starts a new query from the newest time it has given.
* Salesforce: SOQL ``SELECT ... FROM Contact WHERE SystemModstamp >=
  <watermark> ORDER BY SystemModstamp, Id``, paged by ``nextRecordsUrl``
  (``query`` then ``query_more``: the page boundaries are where the import
  commits).

``>=``, not ``>``: records sharing the watermark's time may straddle a page
that did not commit; they are read again, which changes nothing. And the
query starts a *lookback* (5 minutes by default) before the watermark: a
record changed just before a run may reach HubSpot's search index, or commit
in Salesforce, after newer ones were read; the overlap reads it on the next
run (again, re-reading changes nothing).

Cell values: text stays text; ``true``/``false`` become ``"true"``/``"false"``;
numbers their decimal text; ``null`` (and a mapped field the API left out) a
blank cell. Anything else (a nested object) refuses the record: ``expected
text``. A refused record's dead letter is its JSON (encrypted) at line 1 (as a
webhook's), so reading it again does not keep it twice; the
:class:`~commhistory.errors.CrmRowError` in the report has ``line``, the
record's position in the run, and ``record``, its id.

Errors from the clients become :class:`~commhistory.errors.CrmApiError`
(the HTTP status and reason; never a response body). A missing client is a
:class:`~commhistory.errors.MissingExtraError` naming the extra.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs

from commhistory.contacts.crm import CrmMapping, Row
from commhistory.errors import CrmApiError, InvalidInputError, MissingExtraError
from commhistory.normalize.time import parse_timestamp

__all__ = [
    "API_NAMES",
    "HUBSPOT_ENV",
    "LOOKBACK",
    "SALESFORCE_ENV",
    "HubSpotSource",
    "SalesforceSource",
    "api_row",
    "source_from_env",
]

API_NAMES: Final = ("hubspot", "salesforce")
"""The CRMs whose APIs can be read."""

HUBSPOT_ENV: Final = ("COMMHISTORY_HUBSPOT_TOKEN",)
"""The environment variable holding a HubSpot private app's access token."""

SALESFORCE_ENV: Final = (
    "COMMHISTORY_SALESFORCE_INSTANCE_URL",
    "COMMHISTORY_SALESFORCE_TOKEN",
    "COMMHISTORY_SALESFORCE_USERNAME",
    "COMMHISTORY_SALESFORCE_PASSWORD",
    "COMMHISTORY_SALESFORCE_SECURITY_TOKEN",
    "COMMHISTORY_SALESFORCE_DOMAIN",
)
"""The Salesforce credentials, an instance URL and an OAuth access token, or a
user name, password and security token (and a login domain, ``login`` by default)."""

_SEARCH_LIMIT: Final = 10_000  # HubSpot's search API pages no further per query
LOOKBACK: Final = timedelta(minutes=5)
"""How far before the watermark an incremental query starts, by default."""
_FIELD: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")


def _hubspot() -> Any:
    try:
        import hubspot  # noqa: PLC0415 - the optional "hubspot" extra
        import urllib3  # noqa: PLC0415 - hubspot-api-client's transport
        from hubspot.crm.contacts import (  # noqa: PLC0415
            ApiException,
            PublicObjectSearchRequest,
        )
    except ImportError:
        raise MissingExtraError(extra="hubspot", package="hubspot-api-client") from None
    return hubspot, PublicObjectSearchRequest, (ApiException, urllib3.exceptions.HTTPError)


def _salesforce() -> Any:
    try:
        import simple_salesforce  # noqa: PLC0415 - the optional "salesforce" extra
    except ImportError:
        raise MissingExtraError(extra="salesforce", package="simple-salesforce") from None
    return simple_salesforce


def api_row(record: Mapping[str, Any], mapping: CrmMapping) -> dict[str, str | None]:
    """Turn one API record's fields (``{name: JSON value}``) into a row for the mapping.

    Booleans become ``"true"``/``"false"``, numbers their text, ``null`` and
    mapped fields the API left out a blank cell; the id and modified fields,
    when left out, a missing cell (``None``: the record is refused, the import
    goes on). Nested values are kept as they are, so the mapping refuses them
    (``expected text``).

    .. versionadded:: 0.4.0
    """
    row: dict[str, Any] = {}
    for name, value in record.items():
        if isinstance(value, bool):
            row[name] = "true" if value else "false"
        elif isinstance(value, int | float):
            row[name] = str(value)
        elif value is None:
            row[name] = ""
        else:
            row[name] = value
    required = {mapping.id_column, mapping.modified_column}
    for column in _columns(mapping):
        if column not in row:
            row[column] = None if column in required else ""
    return row


def _columns(mapping: CrmMapping) -> list[str]:
    names = [mapping.id_column, mapping.modified_column]
    names += [rule.column for rule in mapping.attributes]
    names += [rule.column for rule in mapping.consent]
    return list(dict.fromkeys(names))


def _dump(record: Mapping[str, Any]) -> str:
    return json.dumps(
        record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )


def _fields(mapping: CrmMapping, crm: str) -> list[str]:
    columns = _columns(mapping)
    for column in columns:
        if not _FIELD.fullmatch(column):
            raise InvalidInputError(
                field=column, reason=f"not a {crm} field name (letters, digits, _)"
            )
    return columns


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


@attrs.define
class HubSpotSource:
    """HubSpot contacts through the CRM search API (``hubspot-api-client``).

    Args:
        client: A ``hubspot.HubSpot`` client (``HubSpot(access_token=...)``).
        page_size: Records per request (HubSpot allows up to 200).
        lookback: How far before the watermark the query starts.

    .. versionadded:: 0.4.0
    """

    client: Any = attrs.field(repr=False)
    page_size: int = 100
    lookback: timedelta = LOOKBACK
    name: str = "hubspot api"
    kind: str = "api"

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **kwargs: Any) -> HubSpotSource:
        """Build a client from ``COMMHISTORY_HUBSPOT_TOKEN`` (a private app's access token).

        Raises:
            MissingExtraError: ``hubspot-api-client`` is not installed.
            InvalidInputError: The variable is not set (``field`` names it).
        """
        hubspot, _, _ = _hubspot()
        token = _env(environ, HUBSPOT_ENV[0])
        if token is None:
            raise InvalidInputError(field=HUBSPOT_ENV[0], reason="not set")
        return cls(hubspot.HubSpot(access_token=token), **kwargs)

    def pages(self, mapping: CrmMapping, since: datetime | None) -> Iterator[Sequence[Row]]:
        """Yield pages of contacts modified at or after *since* (less the lookback), oldest first.

        Raises:
            MissingExtraError: ``hubspot-api-client`` is not installed.
            InvalidInputError: A mapped column is not a property name.
            CrmApiError: A request failed.
        """
        _, search_request, api_exception = _hubspot()
        properties = [c for c in _fields(mapping, "HubSpot") if c != "id"]
        api = self.client.crm.contacts.search_api
        position = 0
        after: str | None = None
        start = None if since is None else since - self.lookback
        while True:
            filters = []
            if start is not None:
                millis = int(start.timestamp() * 1000)
                filters = [
                    {
                        "filters": [
                            {
                                "propertyName": mapping.modified_column,
                                "operator": "GTE",
                                "value": str(millis),
                            }
                        ]
                    }
                ]
            request = search_request(
                filter_groups=filters,
                sorts=[{"propertyName": mapping.modified_column, "direction": "ASCENDING"}],
                properties=properties,
                limit=self.page_size,
                after=after,
            )
            try:
                result = api.do_search(public_object_search_request=request)
            except api_exception as exc:
                reason = getattr(exc, "reason", None)  # an HTTP reason phrase, or an error
                raise CrmApiError(
                    crm="hubspot",
                    status=getattr(exc, "status", None),
                    reason=reason if isinstance(reason, str) and reason else type(exc).__name__,
                ) from None
            page: list[Row] = []
            newest: datetime | None = None
            for item in result.results or []:
                position += 1
                record = {"id": item.id, **(item.properties or {})}
                row = api_row(record, mapping)
                page.append((position, row, _dump(record)))
                newest = _newest(newest, row.get(mapping.modified_column), mapping)
            yield page
            paging = result.paging
            after = paging.next.after if paging and paging.next else None
            if after is None:
                return
            if after.isdigit() and int(after) >= _SEARCH_LIMIT:
                # A new query from the newest time given; its first records repeat.
                if newest is None or (start is not None and newest <= start):
                    raise CrmApiError(
                        crm="hubspot",
                        reason="more than 10,000 records share one modified time: "
                        "the search API cannot page past them",
                    )
                start, after = newest, None


def _newest(newest: datetime | None, text: str | None, mapping: CrmMapping) -> datetime | None:
    try:
        at = parse_timestamp(str(text), default_tz=mapping.timezone)
    except InvalidInputError:
        return newest
    return at if newest is None or at > newest else newest


@attrs.define
class SalesforceSource:
    """Salesforce records through a SOQL query (``simple-salesforce``).

    Args:
        client: A ``simple_salesforce.Salesforce`` client.
        sobject: The object queried (``"Contact"``, ``"Lead"``).
        lookback: How far before the watermark the query starts.

    .. versionadded:: 0.4.0
    """

    client: Any = attrs.field(repr=False)
    sobject: str = "Contact"
    lookback: timedelta = LOOKBACK
    name: str = "salesforce api"
    kind: str = "api"

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **kwargs: Any) -> SalesforceSource:
        """Build a client from the ``COMMHISTORY_SALESFORCE_*`` variables (:data:`SALESFORCE_ENV`).

        ``COMMHISTORY_SALESFORCE_INSTANCE_URL`` and ``..._TOKEN`` (an OAuth access
        token) are used when set; else ``..._USERNAME``, ``..._PASSWORD`` and
        ``..._SECURITY_TOKEN`` log in (``..._DOMAIN``: ``login`` or ``test``).

        Raises:
            MissingExtraError: ``simple-salesforce`` is not installed.
            InvalidInputError: Neither set of variables is complete.
            CrmApiError: The login failed.
        """
        sf = _salesforce()
        url, token, user, password, security, domain = (_env(environ, n) for n in SALESFORCE_ENV)
        if url and token:
            return cls(sf.Salesforce(instance_url=url, session_id=token), **kwargs)
        if user and password and security:
            try:
                client = sf.Salesforce(
                    username=user,
                    password=password,
                    security_token=security,
                    domain=domain or "login",
                )
            except sf.exceptions.SalesforceAuthenticationFailed:
                raise CrmApiError(crm="salesforce", reason="login failed") from None
            return cls(client, **kwargs)
        raise InvalidInputError(
            field=SALESFORCE_ENV[1],
            reason="set COMMHISTORY_SALESFORCE_INSTANCE_URL and _TOKEN, "
            "or _USERNAME, _PASSWORD and _SECURITY_TOKEN",
        )

    def soql(self, mapping: CrmMapping, since: datetime | None) -> str:
        """The query: the fields modified at or after *since* less the lookback, oldest first.

        The start is rounded down to the second (SOQL's ``dateTime`` literal).

        Raises:
            InvalidInputError: A mapped column or the object is not a field name.
        """
        fields = _fields(mapping, "Salesforce")
        if not _FIELD.fullmatch(self.sobject):
            raise InvalidInputError(field="sobject", reason="not a Salesforce object name")
        modified = mapping.modified_column
        where = ""
        if since is not None:
            # SOQL dateTime literals are unquoted; whole seconds, rounded down (>= stays safe).
            start = (since - self.lookback).astimezone(UTC)
            where = f" WHERE {modified} >= {start:%Y-%m-%dT%H:%M:%SZ}"
        order = f" ORDER BY {modified} ASC, {mapping.id_column} ASC"
        return f"SELECT {', '.join(fields)} FROM {self.sobject}{where}{order}"  # noqa: S608

    def pages(self, mapping: CrmMapping, since: datetime | None) -> Iterator[Sequence[Row]]:
        """Yield pages of records modified at or after *since* (less the lookback), oldest first.

        Raises:
            MissingExtraError: ``simple-salesforce`` is not installed.
            InvalidInputError: A mapped column is not a field name.
            CrmApiError: A request failed.
        """
        sf = _salesforce()
        soql = self.soql(mapping, since)
        position = 0
        result = self._call(sf, lambda: self.client.query(soql))
        while True:
            page: list[Row] = []
            for record in result.get("records") or []:
                if not isinstance(record, Mapping):
                    raise CrmApiError(crm="salesforce", reason="a record is not an object")
                position += 1
                fields = {k: v for k, v in record.items() if k != "attributes"}
                page.append((position, api_row(fields, mapping), _dump(record)))
            yield page
            next_url = result.get("nextRecordsUrl")
            if result.get("done", True) or not next_url:
                return
            result = self._call(
                sf, lambda url=next_url: self.client.query_more(url, identifier_is_url=True)
            )

    def _call(self, sf: Any, call: Any) -> Mapping[str, Any]:
        try:
            result = call()
        except sf.exceptions.SalesforceError as exc:
            raise CrmApiError(
                crm="salesforce", status=exc.status, reason=type(exc).__name__
            ) from None
        except OSError as exc:  # requests' connection errors
            raise CrmApiError(crm="salesforce", reason=type(exc).__name__) from None
        if not isinstance(result, Mapping):
            raise CrmApiError(crm="salesforce", reason="the query response is not an object")
        return result


def source_from_env(api: str, environ: Mapping[str, str]) -> HubSpotSource | SalesforceSource:
    """Build the source for *api* (``"hubspot"`` or ``"salesforce"``) from the environment.

    Raises:
        InvalidInputError: An unknown API, or credentials not set.
        MissingExtraError: The API's client is not installed.

    .. versionadded:: 0.4.0
    """
    if api == "hubspot":
        return HubSpotSource.from_env(environ)
    if api == "salesforce":
        return SalesforceSource.from_env(environ)
    raise InvalidInputError(field="api", reason=f"expected one of {', '.join(API_NAMES)}")
