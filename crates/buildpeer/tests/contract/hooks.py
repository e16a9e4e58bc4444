"""Schemathesis hooks for crates/buildpeer/tests/it/contract.rs.

The run logs in as the demo admin once and then keeps its session alive the
way a client must: every `refresh_interval` seconds the access token is
replaced through POST /v1/auth/refresh with the refresh token of the last
pair (refresh tokens rotate: each is good once). Every token obtained is
counted in BUILDPEER_CONTRACT_AUTH_LOG, one line per login or refresh, so
the test can see that a refresh really happened during the run.

Environment (set by the test):
  BUILDPEER_CONTRACT_BASE      the server's base URL
  BUILDPEER_CONTRACT_PASSWORD  the demo admin's password
  BUILDPEER_CONTRACT_AUTH_LOG  file the token log is appended to
  BUILDPEER_CONTRACT_REFRESH   seconds between refreshes
"""

import os
import re
import threading
import uuid

import requests
import schemathesis

BASE = os.environ["BUILDPEER_CONTRACT_BASE"]
PASSWORD = os.environ["BUILDPEER_CONTRACT_PASSWORD"]
AUTH_LOG = os.environ["BUILDPEER_CONTRACT_AUTH_LOG"]
REFRESH_SECONDS = int(os.environ.get("BUILDPEER_CONTRACT_REFRESH", "20"))
# The server's rule for an Idempotency-Key (crates/api/src/dto/strings.rs).
VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _log(event):
    with open(AUTH_LOG, "a", encoding="utf-8") as f:
        f.write(event + "\n")


@schemathesis.auth(refresh_interval=REFRESH_SECONDS)
class DemoAdmin:
    """Bearer tokens of the demo tenant's admin, refreshed as a client would."""

    def __init__(self):
        self._lock = threading.Lock()
        self._refresh_token = None

    def _login(self):
        r = requests.post(
            f"{BASE}/v1/auth/login",
            json={"tenant": "demo", "email": "admin@demo.local", "password": PASSWORD},
            timeout=30,
        )
        r.raise_for_status()
        _log("login")
        return r.json()

    def _refresh(self):
        r = requests.post(
            f"{BASE}/v1/auth/refresh",
            json={"refresh_token": self._refresh_token},
            timeout=30,
        )
        if r.status_code != 200:
            # The fuzzer may have ended this session (POST /v1/auth/logout
            # with a token it saw); a client logs in again.
            _log(f"refresh refused {r.status_code}")
            return self._login()
        _log("refresh")
        return r.json()

    def get(self, case, ctx):
        with self._lock:
            pair = self._refresh() if self._refresh_token else self._login()
            self._refresh_token = pair["refresh_token"]
            return pair["access_token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def before_call(ctx, case, kwargs):
    """A fresh Idempotency-Key for every request that sends a valid one.

    The key is optional; a generated or example one is reused across cases
    whose bodies differ, which the server rightly answers 422
    `idempotency_key_reused`: the fuzzer's doing, not the server's. (In
    before_call, unlike map_headers, this reaches every phase, examples and
    stateful steps included.) An invalid key is left: it is the case's point.
    """
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.fullmatch(key):
        case.headers["Idempotency-Key"] = str(uuid.uuid4())


@schemathesis.serializer("application/offset+octet-stream")
def tus_chunk(ctx, value):
    """tus PATCH bodies are raw bytes (OpenAPI: a binary string)."""
    if isinstance(value, bytes):
        return {"data": value}
    if value is None:
        return {"data": b""}
    return {"data": str(value).encode("utf-8")}
