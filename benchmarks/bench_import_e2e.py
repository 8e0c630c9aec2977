"""``commhistory import`` end to end against a hand-written script doing the same job.

What is measured (``import_e2e.sqlite``, and ``import_e2e.postgres`` when the
server answers), issue 15 item 1:

* **Input (untimed, generated once per run)**: a canonical JSON lines file of
  ``$COMMHISTORY_BENCH_IMPORT_MESSAGES`` email messages (default 100,000; or
  ``--messages N``) with 2 or 3 events each (2.5 on average: delivered, opened
  with a user agent, half of them clicked with a URL), a fifth as many contacts
  as messages, Japanese subjects and bodies.
* **Candidate**: the ``commhistory import FILE`` command in a fresh process,
  into an empty database (the user's whole job: start-up, reading, validation,
  normalization, encryption, blind indexes, storage, the suppression feed).
* **Baseline**: ``benchmarks/import_baseline.py`` in a fresh process, into an
  empty database: ``json.loads`` per line, AES-256-GCM with AAD per personal
  field under per-contact keys, an HMAC blind index, batches of 10,000 rows
  (``executemany`` in WAL mode on SQLite, ``COPY`` on PostgreSQL).

One run of each, interleaved (the harness alternates them). Each command's CPU
time (user + system, from ``getrusage``) is printed too: on a busy machine it
moves less than the wall time (on PostgreSQL it leaves out the server's work). Goal (issue 15):
our time <= 1.67x the baseline on SQLite (>= 0.6x its speed), <= 2x on
PostgreSQL (>= 0.5x).

``import_e2e.validate`` times ``commhistory validate FILE`` on the same file, in
this process (``commhistory.cli.main``, output discarded, the normalizers'
caches emptied before each run), against ``json.loads`` of each line of the file:
best of three. Goal: at least 150,000 lines a second on one core; the ratio to
``json.loads`` and the lines a second are printed.

Run: ``python -m benchmarks import_e2e`` or
``python -m benchmarks.bench_import_e2e --messages 20000``.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_ingest_sqlite import parse_size

MESSAGES_ENV: Final = "COMMHISTORY_BENCH_IMPORT_MESSAGES"
URL_ENV: Final = "COMMHISTORY_BENCH_POSTGRES_URL"
DEFAULT_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
BASELINE: Final = Path(__file__).with_name("import_baseline.py")
ROOT: Final = Path(__file__).resolve().parent.parent

SUBJECTS: Final = (
    "春の新作コレクションのご案内",
    "【会員限定】ポイント2倍キャンペーン",
    "ご注文ありがとうございました",
    "週末セールのお知らせ",
)


def message_count() -> int:
    """Messages in the file: ``$COMMHISTORY_BENCH_IMPORT_MESSAGES`` or 100,000."""
    return int(os.environ.get(MESSAGES_ENV, "100000"))


def write_input(path: Path, n_messages: int) -> int:
    """Write the canonical JSON lines file; return its number of lines."""
    rng = random.Random(15)
    n_contacts = max(1, n_messages // 5)
    t0 = datetime(2026, 4, 1, tzinfo=UTC)
    lines = 0
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n_messages):
            contact = rng.randrange(n_contacts)
            sent = t0 + timedelta(seconds=i * 7)
            mid = f"m{i}"
            message = {
                "kind": "message", "message_id": mid, "channel": "email",
                "direction": "outbound", "contact_id": f"c{contact}",
                "address": f"User{contact}@Example.JP", "campaign_id": f"camp{i % 7}",
                "variant": "AB"[i % 2], "purpose": "marketing",
                "subject": SUBJECTS[i % len(SUBJECTS)],
                "body": f"{SUBJECTS[i % len(SUBJECTS)]}。詳しくはサイトをご覧ください。{i}",
                "sent_at": sent.isoformat(),
            }  # fmt: skip
            fh.write(json.dumps(message, ensure_ascii=False) + "\n")
            events: list[dict[str, Any]] = [
                {"type": "delivered", "occurred_at": (sent + timedelta(seconds=5)).isoformat()},
                {
                    "type": "opened",
                    "occurred_at": (sent + timedelta(minutes=30)).isoformat(),
                    "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
                },
            ]
            if i % 2 == 0:
                events.append(
                    {
                        "type": "clicked",
                        "occurred_at": (sent + timedelta(minutes=31)).isoformat(),
                        "url": f"https://shop.example.jp/spring?c={i}",
                    }
                )
            for n, e in enumerate(events):
                fh.write(
                    json.dumps({"kind": "event", "event_id": f"e{i}-{n}", "message_id": mid, **e})
                    + "\n"
                )
            lines += 1 + len(events)
    return lines


class ImportE2E:
    """One backend's input, fresh targets before each run, and the two commands."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.n_messages = message_count()
        self.work = Path(tempfile.mkdtemp(prefix="commhistory-e2e-"))
        atexit.register(shutil.rmtree, self.work, True)
        self.input = self.work / "history.jsonl"
        self.lines = 0
        self.target = ""
        self.schemas: list[str] = []
        self.outputs: dict[str, str] = {}
        self.cpu: dict[str, float] = {}

    def setup(self) -> None:
        """Write the input once; give each timed run an empty database."""
        if not self.lines:
            self.lines = write_input(self.input, self.n_messages)
        if self.backend == "sqlite":
            for p in self.work.glob("db-*"):
                p.unlink()
            self.target = f"sqlite:///{self.work / f'db-{uuid.uuid4().hex[:8]}.sqlite'}"
        else:
            self.target = self._fresh_schema()
        keyring = self.work / "bench.keyring"
        keyring.unlink(missing_ok=True)

    def _fresh_schema(self) -> str:
        import psycopg

        base = os.environ.get(URL_ENV) or DEFAULT_URL
        name = f"e2e_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.schemas.append(name)
        atexit.register(self._drop, base, name)
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}options=-csearch_path%3D{name}"

    @staticmethod
    def _drop(base: str, name: str) -> None:
        import psycopg

        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")

    def _run(self, args: Sequence[str], key: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=env, check=False
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu[key] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        if done.returncode != 0:
            raise RuntimeError(f"{key} failed ({done.returncode}): {done.stderr[-2000:]}")
        self.outputs[key] = done.stdout.strip().splitlines()[-1] if done.stdout else ""

    def candidate(self) -> None:
        """``commhistory import FILE`` in a fresh process."""
        self._run(
            [
                "-m",
                "commhistory",
                "import",
                str(self.input),
                "--db",
                self.target,
                "--keyring",
                str(self.work / "bench.keyring"),
            ],
            "candidate",
        )

    def baseline(self) -> None:
        """The hand-written script in a fresh process."""
        self._run([str(BASELINE), str(self.input), self.target], "baseline")

    def extra(self) -> dict[str, Any]:
        """The sizes and what each command printed last."""
        cpu = {k: round(v, 3) for k, v in self.cpu.items()}
        return {
            "messages": self.n_messages,
            "lines": self.lines,
            "candidate_cpu_s": cpu.get("candidate"),
            "baseline_cpu_s": cpu.get("baseline"),
            "cpu_ratio": round(self.cpu["candidate"] / self.cpu["baseline"], 3)
            if self.cpu.get("baseline")
            else None,
            "candidate_says": self.outputs.get("candidate", ""),
            "baseline_says": self.outputs.get("baseline", ""),
        }


VALIDATE_GOAL: Final = 150_000
"""Lines a second ``commhistory validate`` should read on one core."""


class ValidateBench:
    """``commhistory validate FILE`` in this process, against ``json.loads`` of each line."""

    def __init__(self) -> None:
        self.n_messages = message_count()
        self.work = Path(tempfile.mkdtemp(prefix="commhistory-validate-"))
        atexit.register(shutil.rmtree, self.work, True)
        self.input = self.work / "history.jsonl"
        self.lines = 0
        self.best = float("inf")
        self.said = ""

    def setup(self) -> None:
        """Write the input once; empty the normalizers' caches before each run."""
        from commhistory.normalize import clear_caches

        if not self.lines:
            self.lines = write_input(self.input, self.n_messages)
        clear_caches()

    def candidate(self) -> None:
        """``commhistory validate FILE``, its output discarded."""
        from commhistory.cli import main as cli_main

        out = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = cli_main(["validate", str(self.input)])
        self.best = min(self.best, time.perf_counter() - start)
        if code != 0:
            raise RuntimeError(f"validate failed ({code}): {out.getvalue()[-2000:]}")
        self.said = out.getvalue().strip().splitlines()[-1]

    def baseline(self) -> None:
        """``json.loads`` of every line."""
        loads = json.loads
        with self.input.open(encoding="utf-8") as fh:
            for line in fh:
                loads(line)

    def extra(self) -> dict[str, Any]:
        """The lines, the lines a second, and what the command printed."""
        return {
            "lines": self.lines,
            "lines_per_second": round(self.lines / self.best),
            "candidate_says": self.said,
        }


def _postgres_up() -> bool:
    try:
        import psycopg

        with psycopg.connect(os.environ.get(URL_ENV) or DEFAULT_URL, connect_timeout=3):
            return True
    except Exception:
        return False


def benchmarks() -> list[Benchmark]:
    """The end-to-end import benchmarks; the input is written at the first setup."""
    out = []
    for backend, goal in (
        ("sqlite", Goal(text=">= 0.6x the hand-written import (ratio <= 1.67)", max_ratio=1.67)),
        (
            "postgres",
            Goal(text=">= 0.5x the hand-written COPY import (ratio <= 2)", max_ratio=2.0),
        ),
    ):
        if backend == "postgres" and not _postgres_up():
            continue
        state = ImportE2E(backend)
        out.append(
            Benchmark(
                name=f"import_e2e.{backend}",
                candidate=state.candidate,
                baseline=state.baseline,
                setup=state.setup,
                goal=goal,
                repeats=1,
                extra=state.extra,
                items=state.n_messages,
            )
        )
    validate = ValidateBench()
    lines = int(validate.n_messages * 3.5)  # 2.5 events a message
    out.append(
        Benchmark(
            name="import_e2e.validate",
            candidate=validate.candidate,
            baseline=validate.baseline,
            setup=validate.setup,
            goal=Goal(
                text=f">= {VALIDATE_GOAL:,} lines/s on one core",
                max_seconds=lines / VALIDATE_GOAL,
            ),
            repeats=3,
            extra=validate.extra,
            items=lines,
        )
    )
    return out


if __name__ == "__main__":
    sys.exit(main([benchmarks], parse_size(sys.argv[1:], MESSAGES_ENV, "--messages")))
