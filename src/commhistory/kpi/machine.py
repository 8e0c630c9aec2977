"""Machine opens and scanner clicks: tell them from people before they are recorded.

Privacy proxies fetch every tracking pixel (Apple Mail Privacy Protection) and
security gateways follow every link of a message seconds after it arrives.
Counted as people, they inflate open and click rates. :func:`classify` names
the rule an event breaks, as a reason code:

``provider_flag``
    The provider said so (e.g. SendGrid's ``sg_machine_open``), in the event's
    metadata.
``apple_mpp``
    An open with a generic user agent (just ``Mozilla/5.0``) from an Apple
    proxy network (configurable; default ``17.0.0.0/8``).
``head_request``
    A ``HEAD`` request (``metadata["http_method"]``): people's browsers send ``GET``.
``scanner_user_agent``
    A user agent of a known link scanner or HTTP library.
``fast_click``
    A click within ``fast_click_seconds`` of delivery.
``click_burst``
    ``burst_links`` or more different links of one message clicked within
    ``burst_seconds``.

:func:`mark_machine` applies the rules to a batch of events and returns them
with ``machine=True`` and ``metadata["machine_reason"]`` set, ready to record;
KPI reports then leave them out unless asked (``exclude_machine=False``).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

import attrs

from commhistory.model import Event, EventType, Message

__all__ = ["REASONS", "MachineRules", "classify", "mark_machine"]

REASONS: Final = (
    "provider_flag",
    "apple_mpp",
    "head_request",
    "scanner_user_agent",
    "fast_click",
    "click_burst",
)
"""Every reason code, in the order the rules are tried."""

_SCANNERS: Final = (
    "barracuda",
    "proofpoint",
    "mimecast",
    "safelinks",
    "urldefense",
    "bingpreview",
    "google-safety",
    "symantec",
    "trendmicro",
    "fortiguard",
    "cisco ironport",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "curl/",
    "wget/",
    "headlesschrome",
    "phantomjs",
    "slackbot",
)


def _networks(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


@attrs.frozen(kw_only=True)
class MachineRules:
    """The classifier's settings.

    Attributes:
        provider_flags: Metadata keys whose true value means the provider
            flagged the event as a machine's.
        apple_proxy_networks: Networks of Apple's privacy proxies (CIDR).
        generic_user_agents: User agents too generic to be a person's mail client.
        scanner_user_agents: Lower-case substrings of scanner user agents.
        fast_click_seconds: Clicks this soon after delivery are a scanner's.
        burst_seconds: The window of a click burst.
        burst_links: Distinct links clicked within the window that make a burst.

    .. versionadded:: 0.2.0
    """

    provider_flags: frozenset[str] = frozenset(
        {"sg_machine_open", "machine_open", "is_machine_open", "machine"}
    )
    apple_proxy_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = attrs.field(
        default=("17.0.0.0/8",), converter=_networks
    )
    generic_user_agents: frozenset[str] = frozenset({"Mozilla/5.0"})
    scanner_user_agents: tuple[str, ...] = _SCANNERS
    fast_click_seconds: float = 10.0
    burst_seconds: float = 2.0
    burst_links: int = 3


DEFAULT_RULES: Final = MachineRules()


def _in_networks(
    ip: str | None, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return False
    return any(address in net for net in networks)


def classify(
    event: Event, *, delivered_at: datetime | None = None, rules: MachineRules = DEFAULT_RULES
) -> str | None:
    """Return the reason code why an open or click is a machine's, or ``None``.

    Only single-event rules apply here; :func:`mark_machine` also finds bursts.

    Args:
        event: The event (other types than opens and clicks return ``None``).
        delivered_at: When the message was delivered (or sent), for ``fast_click``.
        rules: The settings.

    Returns:
        A code from :data:`~commhistory.kpi.machine.REASONS`, or ``None`` for a person.
    """
    if event.type not in (EventType.OPENED, EventType.CLICKED):
        return None
    meta = event.metadata
    if any(meta.get(flag) is True for flag in rules.provider_flags):
        return "provider_flag"
    ua = (event.user_agent or "").strip()
    if (
        event.type is EventType.OPENED
        and ua in rules.generic_user_agents
        and _in_networks(event.ip, rules.apple_proxy_networks)
    ):
        return "apple_mpp"
    method = meta.get("http_method")
    if isinstance(method, str) and method.upper() == "HEAD":
        return "head_request"
    lowered = ua.lower()
    if lowered and any(s in lowered for s in rules.scanner_user_agents):
        return "scanner_user_agent"
    if (
        event.type is EventType.CLICKED
        and delivered_at is not None
        and timedelta(0) <= event.occurred_at - delivered_at
        and (event.occurred_at - delivered_at).total_seconds() <= rules.fast_click_seconds
    ):
        return "fast_click"
    return None


def _message_key(event: Event) -> str | tuple[str | None, str | None]:
    if event.message_id is not None:
        return event.message_id
    return (event.provider, event.provider_message_id)


def mark_machine(
    events: Iterable[Event],
    *,
    messages: Iterable[Message] = (),
    rules: MachineRules = DEFAULT_RULES,
) -> list[Event]:
    """Flag the machine opens and clicks of a batch of events.

    Delivery time is the earliest ``delivered`` event of the message in the
    batch, else the message's ``sent_at`` when *messages* includes it. Events
    already flagged keep their flag; every newly flagged one gets
    ``metadata["machine_reason"]``.

    Args:
        events: The events (all of a message's clicks together, for bursts).
        messages: Their messages, if at hand.
        rules: The settings.

    Returns:
        The events in the same order, machine ones replaced by flagged copies.
    """
    items = list(events)
    delivered: dict[object, datetime] = {}
    for e in items:
        if e.type is EventType.DELIVERED:
            key = _message_key(e)
            seen = delivered.get(key)
            delivered[key] = e.occurred_at if seen is None else min(seen, e.occurred_at)
    for m in messages:
        delivered.setdefault(m.message_id, m.sent_at)
        if m.provider is not None and m.provider_message_id is not None:
            delivered.setdefault((m.provider, m.provider_message_id), m.sent_at)
    reasons: dict[int, str] = {}
    for i, e in enumerate(items):
        if e.machine:
            continue
        reason = classify(e, delivered_at=delivered.get(_message_key(e)), rules=rules)
        if reason is not None:
            reasons[i] = reason
    clicks: dict[object, list[int]] = {}
    for i, e in enumerate(items):
        if e.type is EventType.CLICKED and e.url:
            clicks.setdefault(_message_key(e), []).append(i)
    window = timedelta(seconds=rules.burst_seconds)
    for indexes in clicks.values():
        indexes.sort(key=lambda i: items[i].occurred_at)
        start = 0
        for end in range(len(indexes)):
            while items[indexes[end]].occurred_at - items[indexes[start]].occurred_at > window:
                start += 1
            span = indexes[start : end + 1]
            if len({items[i].url for i in span}) >= rules.burst_links:
                for i in span:
                    if not items[i].machine:
                        reasons.setdefault(i, "click_burst")
    out = []
    for i, e in enumerate(items):
        reason = reasons.get(i)
        if reason is None:
            out.append(e)
        else:
            out.append(
                attrs.evolve(e, machine=True, metadata={**e.metadata, "machine_reason": reason})
            )
    return out
