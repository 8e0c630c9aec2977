"""Webhook commands: ``parse-webhook``, ``ingest-webhook`` and ``verify-webhook``.

* ``parse-webhook --provider NAME FILE``: print the canonical JSON lines of a
  saved provider payload (no verification); events that cannot be parsed are
  reported on standard error. Exit 1 when any was.
* ``ingest-webhook --provider NAME FILE``: store them (``--db``/``--keyring``);
  unparseable events, or a whole unparseable body, become dead letters.
* ``verify-webhook --provider NAME FILE --secret S [--url U] [--header 'N: v']``:
  check a saved request's signature; exit 0 when valid, 4 when not, saying why.
  ``--secret`` is what the adapter is configured with: SendGrid's public key
  (``sendgrid-inbound``: the parse security policy's), Twilio's auth token, LINE's
  channel secret, Mailgun's signing key (``mailgun`` and ``mailgun-inbound``),
  Postmark's ``user:password``, the SNS topic ARN for SES (the certificate
  is then fetched from Amazon), or the Firehose access key for
  ``amazon-connect``; the provider's module reads it (its
  :attr:`~commhistory.providers.ProviderSpec.from_secret`).

``--provider`` takes any provider in the registry
(:mod:`commhistory.providers.registry`), third-party ones included.

Inbound messages and consent changes need a contact id, and get one with no
setup. ``ingest-webhook`` looks the sender up in the repository (by the blind
index of the normalized address: the contact earlier messages to that address
went to); a sender it does not know gets a pseudonymous id derived from a keyed
hash of the channel and the normalized address
(:meth:`KeyedContactResolver.from_keyring
<commhistory.providers.KeyedContactResolver.from_keyring>`: ``c_`` and 32 hex
digits, stable for the keyring, never the address). An opt-out from a number
never messaged is therefore stored and suppresses that address.
``parse-webhook`` derives the same ids from the keyring when it exists
(``--keyring``), and from a key of its own run otherwise (the ids then differ
from run to run; it says so). ``$COMMHISTORY_CONTACT_KEY`` (hex, at least 16
bytes) replaces the keyring-derived key in both. Staff identifiers (an Amazon
Connect agent) are replaced the same way by keyed pseudonyms
(:func:`~commhistory.providers.base.staff_key_from_keyring`).

``parse-webhook`` and ``ingest-webhook`` take ``--region CC`` (default
``$COMMHISTORY_REGION``, else JP): the region of phone numbers written without
a country code, passed to the adapters that read phone numbers (``twilio``,
``amazon-connect``: those whose constructor takes ``region``).

``ingest-webhook --secret S`` (with ``--url``, ``--header`` and ``--tolerance``,
as ``verify-webhook``) verifies the saved request first and stores nothing when
it does not verify (exit 4).

``ingest-webhook`` takes ``--actor``, ``--role``, ``--purpose`` and ``--policy``:
with an actor it stores through the guarded view (``write_history``), and its
sender look-ups need ``read_personal`` and are audited (exit 6 when denied).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import inspect
import json
import math
import os
import secrets
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from commhistory.audit import Permission
from commhistory.cli._access import add_actor_options, resolve_access
from commhistory.cli._argtypes import add_region_option, region_of
from commhistory.cli._exits import EXIT_OK, EXIT_REJECTED, CommandError
from commhistory.cli._store_options import add_store_options, keyring_path
from commhistory.cli._text import plural
from commhistory.cli.store import load_keyring, repository
from commhistory.convert import ParsedLine, dumps
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError, NotFoundError, PayloadError, SignatureError
from commhistory.providers import (
    ContactResolver,
    KeyedContactResolver,
    ProviderLoadError,
    RepositoryContactResolver,
    WebhookAdapter,
    WebhookRequest,
    WebhookResult,
    get_provider,
    provider_names,
)
from commhistory.providers.base import STAFF_KEY_PURPOSE, staff_key_from_keyring

if TYPE_CHECKING:
    from commhistory.store.protocol import HistoryWriter

__all__ = [
    "EXIT_INVALID",
    "build_adapter",
    "register",
    "replay_adapters",
    "run_ingest",
    "run_parse",
    "run_verify",
]

EXIT_INVALID: Final = 4
"""``verify-webhook``'s exit code when the request does not verify."""

CONTACT_KEY_ENV: Final = "COMMHISTORY_CONTACT_KEY"


def _header(value: str) -> tuple[str, str]:
    name, sep, text = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {value!r}")
    return name.strip(), text.strip()


def _tolerance(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        # NaN compares false against every age: it would accept any timestamp.
        raise argparse.ArgumentTypeError(
            f"must be a finite, non-negative number of seconds, got {value!r}"
        )
    return seconds


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the webhook commands."""
    providers = provider_names()

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", metavar="FILE", help="the saved request body")
        parser.add_argument(
            "--provider",
            required=True,
            choices=providers,
            help="the provider that sent the request",
        )
        parser.add_argument(
            "--content-type",
            default=None,
            metavar="T",
            help="the request's Content-Type, when the body alone does not tell "
            "(e.g. application/x-www-form-urlencoded)",
        )
        parser.add_argument(
            "--header",
            dest="headers",
            type=_header,
            action="append",
            default=[],
            metavar="'NAME: VALUE'",
            help="a request header (repeatable)",
        )
        parser.add_argument("--url", default=None, metavar="U", help="the URL the provider called")

    def phones(parser: argparse.ArgumentParser) -> None:
        # Only adapters that read phone numbers (twilio, amazon-connect...) use it.
        add_region_option(parser)

    def verification(parser: argparse.ArgumentParser, *, required: bool) -> None:
        parser.add_argument(
            "--secret",
            required=required,
            default=None,
            metavar="S",
            help="what the adapter is configured with (see verify-webhook)",
        )
        parser.add_argument(
            "--tolerance",
            type=_tolerance,
            default=None,
            metavar="SECONDS",
            help="accepted age of signed timestamps (default 300)",
        )

    parse = subparsers.add_parser(
        "parse-webhook",
        help="print the canonical JSON lines of a saved provider payload",
        description="Parse a saved provider payload (no signature check) and print its "
        "records as canonical JSON lines; events that cannot be parsed are reported on "
        "standard error (exit 1).",
    )
    common(parse)
    phones(parse)
    parse.add_argument(
        "--keyring",
        default=None,
        metavar="PATH",
        help="keyring deriving inbound contact ids (default $COMMHISTORY_KEYRING, if it exists)",
    )
    parse.set_defaults(run=run_parse)

    def output(parser: argparse.ArgumentParser, doc: str) -> None:
        parser.add_argument(
            "--format", choices=("text", "json"), default="text", help=f"{doc} (default text)"
        )

    ingest = subparsers.add_parser(
        "ingest-webhook",
        help="store a saved provider payload; bad events become dead letters",
        description="Store the records of a saved provider payload; events (or a whole "
        "body) that cannot be parsed become dead letters (exit 1). With --secret the "
        "signature is checked first and nothing is stored when it fails (exit 4).",
    )
    common(ingest)
    phones(ingest)
    add_store_options(ingest)
    add_actor_options(ingest)
    verification(ingest, required=False)
    output(ingest, "json: one object with file, total, inserted, duplicates, rejected, linked")
    ingest.set_defaults(run=run_ingest)

    verify = subparsers.add_parser(
        "verify-webhook",
        help="check a saved request's signature (exit 0 valid, 4 invalid)",
        description="Check the signature of a saved request with the secret the adapter "
        "is configured with: SendGrid's public key, Twilio's auth token, LINE's channel "
        "secret, Mailgun's signing key, Postmark's user:password, the SNS topic ARN for "
        "SES or the Firehose access key for amazon-connect. Exit 0 when it verifies, 4 "
        "when not (saying why).",
    )
    common(verify)
    verification(verify, required=True)
    output(verify, "json: one object with provider, valid and reason")
    verify.set_defaults(run=run_verify)


def _resolver() -> ContactResolver | None:
    key = os.environ.get(CONTACT_KEY_ENV)
    if not key:
        return None
    try:
        return KeyedContactResolver(bytes.fromhex(key))
    except (ValueError, InvalidInputError):
        raise CommandError(f"${CONTACT_KEY_ENV} must be at least 16 bytes of hex") from None


def _env_staff_key() -> bytes | None:
    """The staff pseudonym key derived from ``$COMMHISTORY_CONTACT_KEY``, if set."""
    key = os.environ.get(CONTACT_KEY_ENV)
    if not key:
        return None
    return hmac.new(bytes.fromhex(key), STAFF_KEY_PURPOSE.encode(), hashlib.sha256).digest()


def _parse_keys(args: argparse.Namespace) -> tuple[ContactResolver, bytes]:
    """The contact resolver and staff pseudonym key of ``parse-webhook``."""
    given = _resolver()
    staff = _env_staff_key()
    if given is not None and staff is not None:
        return given, staff
    path = keyring_path(args)
    if os.path.exists(path):
        keyring = Keyring.load(path)
        return KeyedContactResolver.from_keyring(keyring), staff_key_from_keyring(keyring)
    print(
        f"note: no keyring at {path}: inbound contact ids are derived from a key of this run"
        " only (pass --keyring or set $COMMHISTORY_CONTACT_KEY for stable ids)",
        file=sys.stderr,
    )
    return KeyedContactResolver(secrets.token_bytes(32)), secrets.token_bytes(32)


def _verdict(args: argparse.Namespace, reason: str | None) -> None:
    """Print whether the request verified: ``valid: ...``/``invalid: WHY``, or JSON."""
    if getattr(args, "format", "text") == "json":
        doc = {"provider": args.provider, "valid": reason is None, "reason": reason}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    elif reason is None:
        print(f"valid: the {args.provider} signature verifies")
    else:
        print(f"invalid: {reason}")


def _verifier(args: argparse.Namespace) -> WebhookAdapter:
    options: dict[str, Any] = {}
    if args.tolerance is not None:
        options["tolerance"] = args.tolerance
    return build_adapter(args.provider, args.secret, **options)


def _check(adapter: WebhookAdapter, request: WebhookRequest) -> str | None:
    """Verify *request*; return why it does not verify, or ``None``."""
    try:
        adapter.verify(request)
    except (SignatureError, PayloadError) as exc:
        return str(exc)
    return None


def _verify_first(args: argparse.Namespace, request: WebhookRequest) -> bool:
    """Verify *request* with ``--secret`` when given; print why and return False if invalid."""
    if args.secret is None:
        return True
    reason = _check(_verifier(args), request)
    if reason is not None:
        _verdict(args, reason)
        return False
    return True


def build_adapter(provider: str, secret: str | None, **options: Any) -> WebhookAdapter:
    """Build an adapter from one secret string (``None``: a parse-only adapter).

    The provider is looked up in the registry
    (:func:`~commhistory.providers.get_provider`), which builds the adapter
    with its :attr:`~commhistory.providers.ProviderSpec.from_secret`.

    Args:
        provider: The provider's name.
        secret: See the module docstring; ``None`` when only parsing.
        **options: Adapter options. ``region`` (the phone region of national
            numbers) is passed only to adapters whose constructor takes it.

    Raises:
        CommandError: The provider is unknown, its entry point broken, or the
            secret unusable.
    """
    try:
        spec = get_provider(provider)
    except NotFoundError:
        raise CommandError(f"unknown provider {provider!r}") from None
    except ProviderLoadError as exc:
        raise CommandError(str(exc)) from None
    if "region" in options and not _takes_region(spec.adapter):
        del options["region"]  # an adapter that reads no phone numbers has no region
    try:
        return spec.from_secret(secret, **options)
    except InvalidInputError as exc:
        raise CommandError(f"--secret: {exc.reason}") from None


def replay_adapters(
    args: argparse.Namespace, keyring: Keyring, target: HistoryWriter
) -> Callable[[str], WebhookAdapter | None]:
    """The provider resolver ``dead-letters replay`` hands the facade.

    Each provider's adapter is built from the registry
    (:func:`~commhistory.providers.get_provider`) as ``ingest-webhook`` builds
    it (contact resolver over *target*, staff key, ``--region``) but without a
    secret: a replayed letter was verified on receipt. A provider that is not
    registered (or whose entry point is broken) gets ``None``, so its letters
    stay untouched; the reason is printed once.
    """
    region = region_of(args)
    fallback = _resolver() or KeyedContactResolver.from_keyring(keyring)
    staff_key = _env_staff_key() or staff_key_from_keyring(keyring)
    resolver = RepositoryContactResolver(target, fallback=fallback)
    built: dict[str, WebhookAdapter | None] = {}

    def adapter_for(provider: str) -> WebhookAdapter | None:
        if provider not in built:
            try:
                built[provider] = build_adapter(
                    provider, None, contact_resolver=resolver, staff_key=staff_key, region=region
                )
            except CommandError as exc:
                print(f"note: {exc}: its dead letters are left as they are", file=sys.stderr)
                built[provider] = None
        return built[provider]

    return adapter_for


def _takes_region(adapter: type[WebhookAdapter]) -> bool:
    """Whether *adapter*'s constructor takes a phone ``region``."""
    try:
        return "region" in inspect.signature(adapter).parameters
    except (TypeError, ValueError):  # a signature Python cannot read: pass nothing extra
        return False


def _request(args: argparse.Namespace) -> WebhookRequest:
    path = args.file
    if not os.path.isfile(path):
        raise CommandError(f"no such file: {path}")
    with open(path, "rb") as handle:
        body = handle.read()
    headers = list(args.headers)
    if args.content_type:
        headers.append(("Content-Type", args.content_type))
    return WebhookRequest(body=body, headers=headers, url=args.url)


def _report_errors(lines: tuple[ParsedLine, ...]) -> int:
    errors = 0
    for line in lines:
        if line.error is not None:
            errors += 1
            print(f"event {line.line}: {line.error.field}: {line.error.reason}", file=sys.stderr)
    return errors


def run_parse(args: argparse.Namespace) -> int:
    """Print the canonical JSON lines of a saved payload."""
    resolver, staff_key = _parse_keys(args)
    adapter = build_adapter(
        args.provider,
        None,
        contact_resolver=resolver,
        staff_key=staff_key,
        region=region_of(args),
    )
    try:
        result: WebhookResult = adapter.parse(_request(args))
    except PayloadError as exc:
        raise CommandError(f"{args.file}: {exc}", exit_code=EXIT_REJECTED) from None
    for record in result.records:
        print(dumps(record))
    return EXIT_REJECTED if _report_errors(result.lines) else EXIT_OK


def run_ingest(args: argparse.Namespace) -> int:
    """Store a saved payload; unparseable parts become dead letters."""
    access = resolve_access(args, audited=Permission.READ_PERSONAL)
    region = region_of(args)
    request = _request(args)
    if not _verify_first(args, request):
        return EXIT_INVALID
    keyring = load_keyring(args, create=True)
    fallback = _resolver() or KeyedContactResolver.from_keyring(keyring)
    staff_key = _env_staff_key() or staff_key_from_keyring(keyring)
    with repository(args, create=True) as repo:
        view = access.view(repo)
        target = repo if view is None else view
        # Through the view, each sender look-up needs read_personal and is audited.
        resolver = RepositoryContactResolver(target, fallback=fallback)
        adapter = build_adapter(
            args.provider, None, contact_resolver=resolver, staff_key=staff_key, region=region
        )
        try:
            lines = adapter.parse(request).lines
        except PayloadError as exc:
            lines = (adapter.body_letter(request, exc),)
        _report_errors(lines)
        report = target.ingest(lines, source=adapter.source)
    if args.format == "json":
        doc = {
            "file": args.file,
            "total": report.total,
            "inserted": report.inserted,
            "duplicates": report.duplicates,
            "rejected": report.rejected,
            "linked": report.linked,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"{args.file}: {plural(report.total, 'record')}: {report.inserted:,} inserted, "
            f"{plural(report.duplicates, 'duplicate')}, {report.rejected:,} rejected "
            "(dead letters)"
        )
    return EXIT_REJECTED if report.rejected else EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    """Check a saved request's signature."""
    adapter = _verifier(args)  # an unusable secret is a usage error, before the file is read
    reason = _check(adapter, _request(args))
    _verdict(args, reason)
    return EXIT_OK if reason is None else EXIT_INVALID
