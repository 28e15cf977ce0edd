"""The audit log (issue 18): changes made through the official SDK and
plain HTTP are recorded with their key, peer address, request id and
outcome; reveals record names, never values; reading needs `audit:read`,
verifying the operator's key; the CLI reads and verifies."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import httpx
import pytest
from miosa import Miosa, errors

from conftest import REPO

MDS = os.environ.get("MDS_BIN", str(REPO / "target" / "debug" / "mds"))


def call(mds, key: str, method: str, path: str, headers: dict | None = None, **kw) -> httpx.Response:
    return httpx.request(method, f"{mds.url}/api/v1{path}",
                         headers={"Authorization": f"Bearer {key}", **(headers or {})}, timeout=120, **kw)


def new_key(mds, name: str, scopes: list[str]) -> dict:
    answer = call(mds, mds.admin_key, "POST", "/api-keys", json={"name": name, "scopes": scopes})
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


def events(mds, key: str, **params) -> list[dict]:
    """Events as the key sees them, once the writer has caught up."""
    deadline = time.monotonic() + 10
    while True:
        answer = call(mds, key, "GET", "/audit-events", params=params)
        assert answer.status_code == 200, answer.text
        found = answer.json()["data"]["events"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def until(mds, key: str, match, **params) -> dict:
    deadline = time.monotonic() + 10
    while True:
        hit = [e for e in events(mds, key, **params) if match(e)]
        if hit:
            return hit[0]
        assert time.monotonic() < deadline, f"no such event: {params}"
        time.sleep(0.1)


def cli(mds, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MIOSA_BASE_URL=mds.url, MIOSA_API_KEY=key or mds.admin_key)
    return subprocess.run([MDS, *args], capture_output=True, text=True, env=env, timeout=120)


def test_changes_and_reveals_are_recorded_with_key_peer_request_and_outcome(mds):
    name = f"auditor-{uuid.uuid4().hex[:6]}"
    key = new_key(mds, name, ["projects:read", "projects:write", "env:read", "env:write",
                              "env:reveal", "audit:read"])
    token = key["token"]
    sdk = Miosa(api_key=token, base_url=mds.url, max_retries=0)
    project = sdk.projects.create(name=f"audited-{uuid.uuid4().hex[:6]}")
    pid = project.id if hasattr(project, "id") else project["id"]

    attached = call(mds, token, "POST", f"/projects/{pid}/data-services?wait=true",
                    json={"type": "postgres"}, headers={"x-request-id": "req-audit-attach-1"})
    assert attached.status_code == 201, attached.text
    assert attached.headers["x-request-id"] == "req-audit-attach-1"
    refused = call(mds, token, "POST", f"/projects/{pid}/data-services", json={"type": "postgres",
                                                                                "pool_mode": "bogus"})
    assert refused.status_code == 422
    revealed = call(mds, token, "GET", f"/projects/{pid}/env", params={"env": "production", "reveal": "true"})
    assert revealed.status_code == 200
    values = {v["name"]: v["value"] for v in revealed.json()["data"]["variables"]}
    password = httpx.URL(values["DATABASE_URL"]).password
    assert password

    attach = until(mds, token, lambda e: e["action"] == "data_service.attach" and e["outcome"] == "ok",
                   project=pid)
    assert attach["actor_kind"] == "key" and attach["actor_id"] == key["id"] and attach["actor_name"] == name
    assert attach["source"] == "127.0.0.1"
    assert attach["request_id"] == "req-audit-attach-1"
    assert attach["target"] == f"/projects/{pid}/data-services"
    assert attach["project_id"] == pid
    bad = until(mds, token, lambda e: e["action"] == "data_service.attach" and e["outcome"] == "refused",
                project=pid)
    assert "422" in bad["detail"]
    reveal = until(mds, token, lambda e: e["action"] == "secret.reveal", project=pid)
    assert "DATABASE_URL" in reveal["detail"] and "REDIS_URL" not in reveal["detail"]
    # Names, never values: the password is nowhere in the log.
    everything = call(mds, mds.admin_key, "GET", "/audit-events", params={"limit": 1000}).text
    assert password not in everything

    # Filters: by action prefix, by time; the CLI shows the same.
    assert all(e["action"].startswith("secret.") for e in events(mds, token, action="secret."))
    future = call(mds, token, "GET", "/audit-events", params={"since": "2999-01-01T00:00:00Z"})
    assert future.json()["data"]["events"] == []
    shown = cli(mds, "audit", "-p", pid, "--since", "1h", "--action", "data_service.", key=token)
    assert shown.returncode == 0, shown.stderr
    assert "data_service.attach" in shown.stdout and name in shown.stdout and "secret.reveal" not in shown.stdout


def test_reading_needs_audit_read_and_verifying_the_operators_key(mds):
    plain = new_key(mds, "no-audit", ["projects:read", "projects:write"])["token"]
    answer = call(mds, plain, "GET", "/audit-events")
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["details"]["required_scope"] == "audit:read"
    reader = new_key(mds, "reader", ["audit:read"])["token"]
    assert call(mds, reader, "GET", "/audit-events").status_code == 200
    # The chain holds every tenant's events: not a tenant key's to walk.
    assert call(mds, reader, "GET", "/audit-events/verify").status_code == 403
    for bad in [{"since": "yesterday"}, {"limit": "0"}, {"limit": "5000"}, {"project": "no-such-project"}]:
        answer = call(mds, reader, "GET", "/audit-events", params=bad)
        assert answer.status_code in (404, 422), (bad, answer.text)
    # Key changes are recorded, by the key that made them.
    until(mds, reader, lambda e: e["action"] == "api_key.create" and e["actor_id"] != "")
    verified = cli(mds, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "The audit chain holds" in verified.stdout


def test_the_sdk_sees_refusals_of_its_calls_recorded(mds, client):
    with pytest.raises(errors.NotFoundError):
        client.projects.delete("prj_does_not_exist")
    until(mds, mds.admin_key,
          lambda e: e["action"] == "project.delete" and e["outcome"] == "refused"
          and e["target"].endswith("/prj_does_not_exist"))
