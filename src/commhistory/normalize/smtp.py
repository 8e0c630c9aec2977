"""SMTP replies and bounce classes (RFC 5321 reply codes, RFC 3463 enhanced status codes).

:func:`parse_smtp_reply` pulls the basic reply code (``550``) and the enhanced
status code (``5.1.1``) out of a reply or a DSN ``Diagnostic-Code``, whatever
wraps them: ``"550 5.1.1 <x@y>: Recipient address rejected"``,
``"smtp; 550-5.1.1 The email account ..."``, multi-line replies, or an
Exchange-style ``"Remote server returned '550 5.1.1 ...'"``.

:func:`classify_bounce` maps a status code (or, failing that, a diagnostic
text) to a :class:`~commhistory.model.BounceClass`:

=========================  ================  =============================================
Enhanced code              Class             Why (RFC 3463 subject)
=========================  ================  =============================================
``4.x.x``                  ``SOFT``          persistent transient failure: retry
``5.1.x``                  ``HARD``          addressing: the mailbox or domain is wrong
``5.1.7``, ``5.1.8``       ``BLOCK``         *our sender* address was refused, not theirs
``5.2.1``                  ``HARD``          mailbox disabled, not accepting messages
``5.2.2``                  ``SOFT``          mailbox full
``5.2.3``                  ``SOFT``          message too long for the mailbox
``5.2.0``, ``5.2.4+``      ``UNDETERMINED``  other mailbox status, list expansion
``5.3.x``                  ``SOFT``          the receiving system, not the mailbox
``5.4.4``                  ``HARD``          unable to route: the domain has no mail host
``5.4.x`` (others)         ``SOFT``          network and routing trouble
``5.5.x``                  ``UNDETERMINED``  protocol errors, usually the sender's side
``5.6.x``                  ``UNDETERMINED``  message content or media
``5.7.x``                  ``BLOCK``         security or policy (spam, reputation, auth)
``5.0.0``, ``2.x.x``       ``UNDETERMINED``  undefined, or not a failure
=========================  ================  =============================================

Only when no enhanced code decides it (none given, or one that maps to
``UNDETERMINED``) does it look at the basic code (``4xx`` is ``SOFT``) and
then at a few well-known phrases in the diagnostic (``"user unknown"`` is
``HARD``, ``"mailbox full"`` is ``SOFT``, ``"blocked"`` is ``BLOCK``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum
import re
from typing import Final

import attrs

__all__ = ["BounceClass", "SmtpReply", "classify_bounce", "parse_smtp_reply"]

_MAX_TEXT: Final = 4096

# A diagnostic type prefix from a DSN (RFC 3464): "smtp; ", "X-Postfix; ".
_TYPE_PREFIX: Final = re.compile(r"\s*[A-Za-z][\w.-]*\s*;\s*", re.ASCII)
# An enhanced code, not part of a longer dotted number such as an IP address.
_ENH: Final = r"#?(?P<enhanced>[245]\.[0-9]{1,3}\.[0-9]{1,3})(?!\.?[0-9])"
_BASIC: Final = r"(?P<basic>[2-5][0-9]{2})"
# "550 5.1.1 text", "550-5.1.1 text", "550 text", "550" (at the start of a line).
_LEADING: Final = re.compile(_BASIC + r"(?:[ \t-]+|$)(?:" + _ENH + ")?", re.ASCII)
_LEADING_ENHANCED: Final = re.compile(_ENH, re.ASCII)
# Anywhere in the text: "... '550 5.1.1 ...'" or a lone "5.1.1".
_PAIR: Final = re.compile(r"(?<![\w.])" + _BASIC + r"[ \t-]+" + _ENH, re.ASCII)
_ENHANCED: Final = re.compile(r"(?<![\w.])" + _ENH, re.ASCII)


# Defined here, below the record model, and re-exported unchanged as
# ``commhistory.model.BounceClass`` and ``commhistory.BounceClass``: the model
# validates addresses with the normalizers, so the normalizers must not import it.
class BounceClass(enum.StrEnum):
    """How permanent a bounce is (RFC 3463 classes, see :mod:`commhistory.normalize.smtp`)."""

    HARD = "hard"
    SOFT = "soft"
    BLOCK = "block"
    UNDETERMINED = "undetermined"


@attrs.frozen(kw_only=True)
class SmtpReply:
    """The parts of one SMTP reply or DSN diagnostic.

    Attributes:
        code: The basic reply code (``550``), when present.
        enhanced: The RFC 3463 enhanced status code (``"5.1.1"``, leading zeros
            dropped), when present.
        text: The human-readable rest, codes removed. Personal: diagnostics
            often quote the address, so it is left out of ``repr()``.

    .. versionadded:: 0.1.0
    """

    code: int | None
    enhanced: str | None
    text: str = attrs.field(repr=False)


def parse_smtp_reply(line: str) -> SmtpReply:
    """Extract the reply code and enhanced status code from an SMTP reply or diagnostic.

    Never raises on text: what cannot be found is ``None``.

    Args:
        line: One reply (possibly multi-line) or a DSN ``Diagnostic-Code``
            value, e.g. ``"smtp; 550 5.1.1 <taro@example.com>: User unknown"``.

    Returns:
        The codes found and the remaining text.

    .. versionadded:: 0.1.0
    """
    raw: object = line  # typed str, but callers pass untrusted payload values
    if not isinstance(raw, str):
        return SmtpReply(code=None, enhanced=None, text="")
    lines = [part.strip() for part in raw[:_MAX_TEXT].splitlines()]
    lines = [part for part in lines if part]
    code: int | None = None
    enhanced: str | None = None
    texts: list[str] = []
    for part in lines:
        prefix = _TYPE_PREFIX.match(part)
        rest = part[prefix.end() :] if prefix and _starts_with_code(part[prefix.end() :]) else part
        lead = _LEADING.match(rest)
        if lead is not None:
            code = code if code is not None else int(lead["basic"])
            enhanced = enhanced or _canonical(lead["enhanced"])
            rest = rest[lead.end() :]
        else:
            alone = _LEADING_ENHANCED.match(rest)
            if alone is not None:
                enhanced = enhanced or _canonical(alone["enhanced"])
                rest = rest[alone.end() :]
        texts.append(rest.strip())
    text = " ".join(t for t in texts if t)
    if enhanced is None:
        pair = _PAIR.search(text)
        if pair is not None:
            code = code if code is not None else int(pair["basic"])
            enhanced = _canonical(pair["enhanced"])
        else:
            lone = _ENHANCED.search(text)
            if lone is not None:
                enhanced = _canonical(lone["enhanced"])
    return SmtpReply(code=code, enhanced=enhanced, text=text)


def _starts_with_code(text: str) -> bool:
    return bool(_LEADING.match(text) or _LEADING_ENHANCED.match(text))


def _canonical(enhanced: str | None) -> str | None:
    if enhanced is None:
        return None
    return ".".join(str(int(part)) for part in enhanced.split("."))


# (class, subject) -> class; then (class, subject, detail) overrides.
_BY_SUBJECT: Final[dict[int, BounceClass]] = {
    1: BounceClass.HARD,
    2: BounceClass.UNDETERMINED,
    3: BounceClass.SOFT,
    4: BounceClass.SOFT,
    5: BounceClass.UNDETERMINED,
    6: BounceClass.UNDETERMINED,
    7: BounceClass.BLOCK,
}
_BY_DETAIL: Final[dict[tuple[int, int], BounceClass]] = {
    (1, 7): BounceClass.BLOCK,
    (1, 8): BounceClass.BLOCK,
    (2, 1): BounceClass.HARD,
    (2, 2): BounceClass.SOFT,
    (2, 3): BounceClass.SOFT,
    (4, 4): BounceClass.HARD,
}

# Checked in order, on lower-cased text, only when the codes do not decide.
_PHRASES: Final[tuple[tuple[re.Pattern[str], BounceClass], ...]] = (
    (
        re.compile(r"mailbox (?:is )?full|over ?quota|quota exceeded|insufficient storage"),
        BounceClass.SOFT,
    ),
    (
        re.compile(
            r"user unknown|unknown user|no such (?:user|mailbox|recipient)"
            r"|(?:recipient|mailbox|account|address) (?:does not|doesn't) exist"
            r"|recipient not found|invalid recipient|mailbox not found|host not found"
        ),
        BounceClass.HARD,
    ),
    (
        re.compile(
            r"blocked|blacklist|blocklist|denylist|spam|policy|reputation|not authori[sz]ed"
        ),
        BounceClass.BLOCK,
    ),
)


def _from_enhanced(enhanced: str) -> BounceClass:
    klass, subject, detail = (int(part) for part in enhanced.split("."))
    if klass == 4:
        return BounceClass.SOFT
    if klass != 5:
        return BounceClass.UNDETERMINED
    by_detail = _BY_DETAIL.get((subject, detail))
    if by_detail is not None:
        return by_detail
    if subject == 2 and detail == 0:
        return BounceClass.UNDETERMINED
    return _BY_SUBJECT.get(subject, BounceClass.UNDETERMINED)


def classify_bounce(status_code: str | None = None, diagnostic: str | None = None) -> BounceClass:
    """Classify a bounce by its status code and diagnostic text (RFC 3463).

    The enhanced status code decides when it can; see the module's table.
    ``status_code`` wins over a code found in ``diagnostic``. Never raises on
    text: anything unreadable is ``UNDETERMINED``.

    Args:
        status_code: An enhanced status code (``"5.1.1"``), a basic reply code
            (``"550"``) or a whole reply line.
        diagnostic: The provider's diagnostic text or DSN ``Diagnostic-Code``.

    Returns:
        ``HARD``, ``SOFT``, ``BLOCK`` or ``UNDETERMINED``.

    .. versionadded:: 0.1.0
    """
    given = parse_smtp_reply(status_code) if isinstance(status_code, str) else None
    found = parse_smtp_reply(diagnostic) if isinstance(diagnostic, str) else None
    for reply in (given, found):
        if reply is not None and reply.enhanced is not None:
            result = _from_enhanced(reply.enhanced)
            if result is not BounceClass.UNDETERMINED:
                return result
    for reply in (given, found):
        if reply is not None and reply.code is not None and reply.code // 100 == 4:
            return BounceClass.SOFT
    if found is not None:
        lowered = found.text.lower()
        for pattern, bounce in _PHRASES:
            if pattern.search(lowered):
                return bounce
    return BounceClass.UNDETERMINED
