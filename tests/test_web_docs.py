"""The web pages' apps and tests run: each page's code blocks, against its framework.

``docs/web/fastapi.md``, ``flask.md`` and ``django.md`` each hold a complete app
(the block starting ``# app.py`` or ``# webhooks.py``) and a test of it (``# test_...``).
Here each app is written to a file, imported with its environment set, and sent a
signed webhook through the framework's test client; then the page's own test runs.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from commhistory import Keyring
from commhistory.testing import SignedWebhook, signed_webhook

WEB = Path(__file__).resolve().parent.parent / "docs" / "web"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
SECRET = "test-secret"
LINE_USER = "U4af4980629a0b1c2d3e4f5a6b7c8d9e0"


def blocks(page: str) -> dict[str, str]:
    """The page's Python blocks by the file name on their first line (``# app.py``)."""
    found: dict[str, str] = {}
    for code in FENCE.findall((WEB / page).read_text(encoding="utf-8")):
        first = code.splitlines()[0]
        if first.startswith("# ") and ".py" in first:
            found[first[2:].split()[0].removesuffix(".py")] = code
    return found


@pytest.fixture
def page_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The environment the pages' apps read, and a folder on ``sys.path`` for their files."""
    Keyring.generate().save(tmp_path / "docs.keyring")
    monkeypatch.setenv("COMMHISTORY_KEYRING", str(tmp_path / "docs.keyring"))
    monkeypatch.setenv("COMMHISTORY_DATABASE_URL", f"sqlite:///{tmp_path / 'docs.db'}")
    monkeypatch.setenv("CONTACT_ID_KEY", "ab" * 16)
    monkeypatch.setenv("LINE_CHANNEL_SECRET", SECRET)
    monkeypatch.setenv("MAILGUN_SIGNING_KEY", "mailgun-key")
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    monkeypatch.syspath_prepend(str(code_dir))
    before = set(sys.modules)
    yield code_dir
    for name in set(sys.modules) - before:
        if name in {"app", "webhooks", "test_app", "test_webhooks"}:
            del sys.modules[name]


def load(code_dir: Path, page: str) -> dict[str, Any]:
    """Write the page's blocks as modules; import and return them by name."""
    found = blocks(page)
    assert len(found) == 2, f"{page}: expected an app block and a test block, got {sorted(found)}"
    for name, code in found.items():
        (code_dir / f"{name}.py").write_text(code, encoding="utf-8")
    importlib.invalidate_caches()
    return {name: importlib.import_module(name) for name in sorted(found)}


def line_webhook(n: int) -> SignedWebhook:
    body = {
        "destination": "U0",
        "events": [
            {
                "type": "message",
                "mode": "active",
                "timestamp": 1775001600000 + n,
                "source": {"type": "user", "userId": LINE_USER},
                "webhookEventId": f"01HXDOCS{n:018d}",
                "replyToken": "r",
                "deliveryContext": {"isRedelivery": False},
                "message": {"id": f"77{n:08d}", "type": "text", "text": "hi"},
            }
        ],
    }
    return signed_webhook("line", body, SECRET)


def run_page_test(module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Call the page's ``test_*`` functions with the fixtures they name."""
    fixtures = {"tmp_path": tmp_path, "monkeypatch": monkeypatch}
    tests = [f for name, f in vars(module).items() if name.startswith("test_")]
    for test in tests:
        wanted = inspect.signature(test).parameters
        (tmp_path / test.__name__).mkdir()
        args = {k: tmp_path / test.__name__ if k == "tmp_path" else fixtures[k] for k in wanted}
        test(**args)
    return len(tests)


def test_fastapi_page(page_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx2")
    from starlette.testclient import TestClient

    modules = load(page_env, "fastapi.md")
    app = modules["app"].create_app()
    repo = app.state.repo
    with TestClient(app) as client:
        webhook = line_webhook(1)
        answer = client.post("/webhooks/line", content=webhook.body, headers=webhook.headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"inserted": 1, "duplicates": 0, "rejected": 0}
        big = client.post("/webhooks/line", content=b"x" * (5 * 2**20 + 1))
        assert big.status_code == 413
        assert client.post("/webhooks/mailgun", content=b"{}").status_code == 403
    with pytest.raises(Exception, match="closed"):  # the lifespan closed it
        repo.timeline("anyone")
    assert run_page_test(modules["test_app"], tmp_path, monkeypatch) == 1


def test_flask_page(page_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("flask")
    modules = load(page_env, "flask.md")
    app = modules["app"].create_app()
    client = app.test_client()
    webhook = line_webhook(2)
    answer = client.post("/webhooks/line", data=webhook.body, headers=dict(webhook.headers))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json() == {"inserted": 1, "duplicates": 0, "rejected": 0}
    assert client.post("/webhooks/line", data=b"x" * (5 * 2**20 + 1)).status_code == 413
    app.extensions["commhistory"].close()
    assert run_page_test(modules["test_app"], tmp_path, monkeypatch) == 1


def test_django_page(page_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("django")
    import django  # type: ignore[import-untyped]
    from django.conf import settings  # type: ignore[import-untyped]

    if not settings.configured:
        settings.configure(
            ROOT_URLCONF="webhooks",
            ALLOWED_HOSTS=["testserver"],
            MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()
    from django.test import Client, override_settings  # type: ignore[import-untyped]
    from django.urls import clear_url_caches  # type: ignore[import-untyped]

    modules = load(page_env, "django.md")
    try:
        with override_settings(ROOT_URLCONF="webhooks"):
            clear_url_caches()
            client = Client(enforce_csrf_checks=True)
            webhook = line_webhook(3)
            headers = dict(webhook.headers)
            content_type = headers.pop("Content-Type")
            answer = client.post(
                "/webhooks/line", data=webhook.body, content_type=content_type, headers=headers
            )
            assert answer.status_code == 200, answer.content
            assert answer.json() == {"inserted": 1, "duplicates": 0, "rejected": 0}
            huge = client.post(
                "/webhooks/line", data=b"x" * (5 * 2**20 + 1), content_type="application/json"
            )
            assert huge.status_code == 413
            assert run_page_test(modules["test_webhooks"], tmp_path, monkeypatch) == 1
    finally:
        modules["webhooks"].repo.close()
        clear_url_caches()
