"""The provider registry: every adapter registers itself under its provider's name.

A provider is one module. Next to its adapter class it declares a
:class:`ProviderSpec` (how the command line builds the adapter from its one
``--secret`` string, and how the testing kit signs a payload the way the
provider does) and registers it when imported::

    PROVIDER: Final = register_provider(
        ProviderSpec(adapter=AcmeAdapter, from_secret=_from_secret, signer=_sign)
    )

The ``commhistory *-webhook --provider NAME`` commands,
:func:`commhistory.testing.signed_webhook` and
:data:`commhistory.providers.ADAPTERS` look providers up here
(:func:`get_provider`, :func:`provider_names`); nothing else names them.

Third-party adapters plug in the same way, through the entry point group
``commhistory.providers``: each entry point is named after its provider and
points at the module's :class:`ProviderSpec`::

    [project.entry-points."commhistory.providers"]
    acme = "acme_hooks.provider:PROVIDER"

The built-in provider modules (every public module of
:mod:`commhistory.providers` but ``base`` and ``registry``) and the entry
points are loaded lazily, on the first look-up, and once. An entry point that
cannot be loaded does not hide the others: looking its provider up raises a
:class:`ProviderLoadError` naming the entry point, every time.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import json
import pkgutil
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Final, Protocol

import attrs

from commhistory.errors import CommHistoryError, InvalidInputError, NotFoundError
from commhistory.providers.base import WebhookAdapter

__all__ = [
    "ENTRY_POINT_GROUP",
    "AdapterFactory",
    "DuplicateProviderError",
    "PayloadSigner",
    "ProviderLoadError",
    "ProviderSpec",
    "SignedRequest",
    "get_provider",
    "json_body",
    "multipart_body",
    "provider_names",
    "register_provider",
    "registered_adapters",
]

ENTRY_POINT_GROUP: Final = "commhistory.providers"
"""The entry point group third-party provider modules register their :class:`ProviderSpec` in."""

_NOT_PROVIDERS: Final = frozenset({"base", "registry"})
_NAME: Final = re.compile(r"[a-z][a-z0-9_-]*")


# --------------------------------------------------------------------------- errors


class DuplicateProviderError(CommHistoryError, ValueError):
    """A provider name is already registered to another provider.

    Attributes:
        name: The provider's name.
        holder: The adapter class that holds the name (``module.Class``).

    .. versionadded:: 0.4.0
    """

    def __init__(self, *, name: str, holder: str) -> None:
        self.name = name
        self.holder = holder
        super().__init__(f"provider {name!r} is already registered by {holder}")

    def __reduce__(self) -> tuple[object, ...]:
        return (functools.partial(type(self), name=self.name, holder=self.holder), ())


class ProviderLoadError(CommHistoryError):
    """A third-party provider's entry point cannot be loaded or is not a provider.

    Raised when that provider is looked up, never for the others.

    Attributes:
        entry_point: The entry point's name (the provider's name).
        target: What it points at (``"module:attribute"``).
        reason: Why it cannot be used.

    .. versionadded:: 0.4.0
    """

    def __init__(self, *, entry_point: str, target: str, reason: str) -> None:
        self.entry_point = entry_point
        self.target = target
        self.reason = reason
        super().__init__(
            f"provider entry point {entry_point!r} = {target!r} (group {ENTRY_POINT_GROUP!r})"
            f" cannot be loaded: {reason}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        kwargs = {"entry_point": self.entry_point, "target": self.target, "reason": self.reason}
        return (functools.partial(type(self), **kwargs), ())


# --------------------------------------------------------------------------- the spec


@attrs.frozen(kw_only=True)
class SignedRequest:
    """A request signed the way a provider signs it (what a :class:`PayloadSigner` returns).

    Attributes:
        body: The raw body.
        headers: The headers to send (content type and signature), spelled as the
            provider spells them.
        url: The URL to POST to (Twilio's JSON mode adds ``bodySHA256`` to it).

    .. versionadded:: 0.4.0
    """

    body: bytes = attrs.field(repr=False)
    headers: Mapping[str, str] = attrs.field(repr=False)
    url: str


class AdapterFactory(Protocol):
    """Builds a provider's adapter from the one secret string the command line takes.

    Called as ``from_secret(secret, **options)``: *secret* is what
    ``verify-webhook --secret`` gave (SendGrid's public key, Postmark's
    ``user:password``...), or ``None`` for an adapter that only parses (it must
    still construct: use a placeholder secret); *options* are
    :class:`~commhistory.providers.WebhookAdapter` options (``tolerance``,
    ``contact_resolver``...). Raises :class:`~commhistory.InvalidInputError`
    when the secret is unusable.

    .. versionadded:: 0.4.0
    """

    def __call__(self, secret: str | None, /, **options: Any) -> WebhookAdapter:
        """Return the adapter built from *secret* and *options*."""
        ...


class PayloadSigner(Protocol):
    """Signs a payload the way the provider signs its webhooks (for the testing kit).

    Called as ``signer(events, secret, url=url, timestamp=now)`` by
    :func:`commhistory.testing.signed_webhook` with its arguments (*url*
    already defaulted, *timestamp* in epoch seconds); returns the
    :class:`SignedRequest`. Raises :class:`~commhistory.InvalidInputError`
    (``field="secret"``) for a secret it cannot sign with.

    .. versionadded:: 0.4.0
    """

    def __call__(
        self, events: Any, secret: Any, /, *, url: str, timestamp: float
    ) -> SignedRequest:
        """Return *events* signed with *secret* for *url* at *timestamp*."""
        ...


def _check_adapter(_: object, __: object, value: type[WebhookAdapter]) -> None:
    given: object = value
    if not isinstance(given, type) or not issubclass(given, WebhookAdapter):
        raise InvalidInputError(field="adapter", reason="must be a WebhookAdapter subclass")
    name: object = getattr(given, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(
            field="adapter.name",
            reason="must be a lower-case provider name (letters, digits, '-', '_')",
        )


def _check_callable(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise InvalidInputError(field=attribute.name, reason="must be callable")


@attrs.frozen(kw_only=True)
class ProviderSpec:
    """What the command line and the testing kit need to know about one provider.

    Attributes:
        adapter: The adapter class; its ``name`` is the provider's name (a
            lower-case word: the ``--provider`` value and the URL path segment).
        from_secret: Builds the adapter from the command line's ``--secret``
            (see :class:`AdapterFactory`).
        signer: Signs test payloads for :func:`commhistory.testing.signed_webhook`
            (see :class:`PayloadSigner`); ``None`` when the provider offers none.

    Raises:
        InvalidInputError: ``adapter`` is not a named
            :class:`~commhistory.providers.WebhookAdapter` subclass, or a
            function is not callable.

    .. versionadded:: 0.4.0
    """

    adapter: type[WebhookAdapter] = attrs.field(validator=_check_adapter)
    from_secret: AdapterFactory = attrs.field(validator=_check_callable)
    signer: PayloadSigner | None = attrs.field(default=None, validator=_check_callable)

    @property
    def name(self) -> str:
        """The provider's name (the adapter's ``name``)."""
        return self.adapter.name


def json_body(obj: Any) -> bytes:
    """Encode a payload as compact UTF-8 JSON, the body test signers send.

    .. versionadded:: 0.4.0
    """
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def multipart_body(fields: Mapping[str, Any], *, boundary: str) -> bytes:
    """Encode form fields as ``multipart/form-data`` (the body form-posting test signers send).

    A value that is a string is a text field (UTF-8); a ``(filename,
    content_type, data)`` tuple is a file; a list repeats the field.

    .. versionadded:: 0.4.0
    """
    out: list[bytes] = []
    for name, given in fields.items():
        for value in given if isinstance(given, list) else [given]:
            out.append(f"--{boundary}\r\n".encode())
            if isinstance(value, tuple):
                filename, content_type, data = value
                out.append(
                    f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    f"Content-Type: {content_type}\r\n\r\n".encode()
                )
                out.append(data if isinstance(data, bytes) else str(data).encode())
            else:
                out.append(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
                out.append(str(value).encode("utf-8"))
            out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


# --------------------------------------------------------------------------- the registry


@attrs.define
class _State:
    specs: dict[str, ProviderSpec] = attrs.field(factory=dict)
    broken: dict[str, ProviderLoadError] = attrs.field(factory=dict)
    loaded: bool = False

    def copy(self) -> _State:
        return _State(specs=dict(self.specs), broken=dict(self.broken), loaded=self.loaded)


_LOCK: Final = threading.RLock()  # re-entrant: loading imports modules that register
_STATE = _State()


def _holder(spec: ProviderSpec) -> str:
    return f"{spec.adapter.__module__}.{spec.adapter.__qualname__}"


def register_provider(spec: ProviderSpec) -> ProviderSpec:
    """Register a provider under its name; provider modules call it when imported.

    Registering the same spec again does nothing (a module imported both
    directly and through its entry point).

    Args:
        spec: The provider.

    Returns:
        The spec given, so that a module can keep it as ``PROVIDER``.

    Raises:
        DuplicateProviderError: Another provider already has the name.
        InvalidInputError: *spec* is not a :class:`ProviderSpec`.

    .. versionadded:: 0.4.0
    """
    given: object = spec
    if not isinstance(given, ProviderSpec):
        raise InvalidInputError(field="spec", reason="must be a ProviderSpec")
    with _LOCK:
        held = _STATE.specs.get(spec.name)
        if held is not None and held != spec:
            raise DuplicateProviderError(name=spec.name, holder=_holder(held))
        _STATE.specs[spec.name] = spec
    return spec


def _import_builtins() -> None:
    package = importlib.import_module(__package__ or "commhistory.providers")
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_") and module.name not in _NOT_PROVIDERS:
            importlib.import_module(f"{package.__name__}.{module.name}")


def _load_entry_point(entry_point: importlib.metadata.EntryPoint) -> None:
    def broken(reason: str) -> ProviderLoadError:
        error = ProviderLoadError(
            entry_point=entry_point.name, target=entry_point.value, reason=reason
        )
        _STATE.broken[entry_point.name] = error
        return error

    try:
        loaded: object = entry_point.load()
    except Exception as exc:  # third-party code may fail in any way; say which
        broken(f"{type(exc).__name__}: {exc}").__cause__ = exc
        return
    if not isinstance(loaded, ProviderSpec):
        kind = type(loaded).__name__
        what = f"the class {loaded.__name__}" if isinstance(loaded, type) else f"a {kind} object"
        broken(f"it is {what}, not a ProviderSpec")
    elif loaded.name != entry_point.name:
        broken(f"its adapter is named {loaded.name!r}; name the entry point after it")
    else:
        try:
            register_provider(loaded)
        except DuplicateProviderError as exc:
            broken(str(exc)).__cause__ = exc


def _loaded() -> _State:
    with _LOCK:
        state = _STATE
        if not state.loaded:
            state.loaded = True  # first: a module loaded below may look providers up
            _import_builtins()
            for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                _load_entry_point(entry_point)
        return state


def get_provider(name: str) -> ProviderSpec:
    """Return the provider registered under *name*.

    The first look-up imports the built-in provider modules and loads the
    ``commhistory.providers`` entry points.

    Args:
        name: The provider's name (``"sendgrid"``).

    Raises:
        NotFoundError: ``kind="provider"``; no provider has the name.
        ProviderLoadError: The name's entry point cannot be loaded.

    .. versionadded:: 0.4.0
    """
    state = _loaded()
    with _LOCK:
        error = state.broken.get(name)
        spec = state.specs.get(name)
    if error is not None:
        raise error.with_traceback(None)
    if spec is None:
        raise NotFoundError(kind="provider", identifier=name)
    return spec


def provider_names() -> tuple[str, ...]:
    """Return every provider's name, sorted.

    Includes a third-party provider whose entry point cannot be loaded
    (:func:`get_provider` then raises :class:`ProviderLoadError`), so that
    choosing it says why it fails rather than that it does not exist.

    .. versionadded:: 0.4.0
    """
    state = _loaded()
    with _LOCK:
        return tuple(sorted(state.specs.keys() | state.broken.keys()))


class _AdapterView(Mapping[str, type[WebhookAdapter]]):
    """A live, read-only view of the registered adapter classes by name."""

    def __getitem__(self, name: str) -> type[WebhookAdapter]:
        state = _loaded()
        with _LOCK:
            spec = state.specs.get(name)
        if spec is None:
            raise KeyError(name)
        return spec.adapter

    def __iter__(self) -> Iterator[str]:
        state = _loaded()
        with _LOCK:
            return iter(sorted(state.specs))

    def __len__(self) -> int:
        state = _loaded()
        with _LOCK:
            return len(state.specs)

    def __repr__(self) -> str:
        return f"{{{', '.join(f'{k!r}: {v.__name__}' for k, v in self.items())}}}"


_ADAPTERS: Final = _AdapterView()


def registered_adapters() -> Mapping[str, type[WebhookAdapter]]:
    """Return a live, read-only mapping of every registered adapter class by provider name.

    Providers whose entry point cannot be loaded are left out (:func:`get_provider`
    says why). :data:`commhistory.providers.ADAPTERS` is this mapping.

    .. versionadded:: 0.4.0
    """
    return _ADAPTERS
