"""The official MIOSA Python SDK (miosa==2.19.2), unmodified, against mds:
projects, environments, shared variables, API keys and the error contract."""

from __future__ import annotations

import uuid

import httpx
import pytest
from miosa import Miosa
from miosa import errors


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_projects_round_trip(client):
    slug = unique("clinic")
    project = client.projects.create(
        "Clinic IQ", workspace_id="ws1", description="patients", slug=slug,
        metadata={"team": "core"},
    )
    assert project["id"].startswith("proj_")
    assert project["slug"] == slug
    assert project["workspace_id"] == "ws1"
    assert client.projects.get(project["id"])["name"] == "Clinic IQ"
    assert client.projects.get(slug)["id"] == project["id"]
    assert project["id"] in [p["id"] for p in client.projects.list()]
    assert [p["id"] for p in client.projects.list(workspace_id="ws1")] == [project["id"]]

    updated = client.projects.update(project["id"], name="Clinic IQ 2", description="all")
    assert updated["name"] == "Clinic IQ 2" and updated["slug"] == slug

    client.projects.delete(project["id"])
    with pytest.raises(errors.NotFoundError) as raised:
        client.projects.get(project["id"])
    assert raised.value.status_code == 404
    assert raised.value.code == "NOT_FOUND"
    assert raised.value.request_id.startswith("req_")


def test_environments(client):
    project = client.projects.create(unique("Envs"))
    pid = project["id"]
    names = [e["name"] for e in client.projects.environments(pid)]
    assert names == ["production", "staging"]
    default = [e for e in client.projects.environments(pid) if e["is_default"]]
    assert [e["name"] for e in default] == ["production"]

    qa = client.projects.create_environment(pid, "qa")
    preview = client.projects.create_environment(pid, "preview/pr-42")
    assert preview["slug"] == "preview-pr-42" and preview["kind"] == "preview"

    with pytest.raises(errors.EnvironmentNameTakenError) as raised:
        client.projects.create_environment(pid, "qa")
    assert raised.value.status_code == 409
    with pytest.raises(errors.ValidationError) as raised:
        client.projects.create_environment(pid, "Not Valid")
    assert raised.value.details.get("field") == "name"

    renamed = client.projects.update_environment(pid, qa["id"], name="qa-eu")
    assert renamed["name"] == "qa-eu"

    prod_id = default[0]["id"]
    with pytest.raises(errors.EnvironmentIsDefaultError):
        client.projects.delete_environment(pid, prod_id)
    client.projects.delete_environment(pid, qa["id"])
    with pytest.raises(errors.EnvironmentNotFoundError):
        client.projects.delete_environment(pid, qa["id"])
    names = [e["name"] for e in client.projects.environments(pid)]
    assert names == ["production", "staging", "preview/pr-42"]


def test_shared_variables_per_environment(client, mds):
    pid = client.projects.create(unique("Vars"))["id"]
    rows = client.projects.set_shared_variables(
        pid,
        {"API_BASE": "https://staging.example.com", "SESSION_SECRET": "s3cr3t-value-xyz"},
        environment="staging",
    )
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"API_BASE", "SESSION_SECRET"}
    assert by_name["SESSION_SECRET"]["is_secret"] is True
    assert "s3cr3t" not in by_name["SESSION_SECRET"]["preview"]
    assert all("value" not in r for r in rows)

    client.projects.set_shared_variables(pid, [{"name": "API_BASE", "value": "https://example.com"}])
    prod = client.projects.shared_variables(pid)
    assert [r["name"] for r in prod] == ["API_BASE"]
    assert prod[0]["environment"] == "production"
    staging = client.projects.shared_variables(pid, environment="staging")
    assert len(staging) == 2

    client.projects.delete_shared_variable(pid, "SESSION_SECRET", environment="staging")
    assert [r["name"] for r in client.projects.shared_variables(pid, environment="staging")] == [
        "API_BASE"
    ]
    with pytest.raises(errors.ValidationError) as raised:
        client.projects.set_shared_variables(pid, {"1BAD": "x"})
    assert raised.value.details["field"] == "variables"
    with pytest.raises(errors.EnvironmentNotFoundError):
        client.projects.shared_variables(pid, environment="nowhere")

    # Values are revealed only with the env:reveal scope.
    reveal = httpx.get(
        f"{mds.url}/api/v1/projects/{pid}/shared-variables",
        params={"env": "staging", "reveal": "true"},
        headers={"Authorization": f"Bearer {mds.admin_key}"},
    ).json()
    assert reveal["data"][0]["value"] == "https://staging.example.com"


def test_api_keys_and_scopes(client, mds):
    created = client.api_keys.create(name="reader", scopes=["projects:read", "env:read"])
    token = created["token"]
    assert token.startswith("msk_") and created["key"] == token
    assert created["id"] in [k["id"] for k in client.api_keys.list()]
    assert "token" not in client.api_keys.get(created["id"])
    presets = {p["name"]: p["scopes"] for p in client.api_keys.presets()}
    assert presets["admin"] == ["*"] and "env:reveal" not in presets["default"]

    reader = Miosa(api_key=token, base_url=mds.url, max_retries=0)
    reader.projects.list()
    with pytest.raises(errors.PermissionError) as raised:
        reader.projects.create("nope")
    assert raised.value.code == "insufficient_scope"
    assert "projects:write" in raised.value.message
    with pytest.raises(errors.PermissionError):
        reader.api_keys.create(name="escalate", scopes=["*"])

    rotated = client.api_keys.rotate(created["id"])
    with pytest.raises(errors.AuthenticationError) as raised:
        reader.projects.list()
    assert raised.value.code == "invalid_token"
    Miosa(api_key=rotated["token"], base_url=mds.url).projects.list()

    client.api_keys.delete(created["id"])
    with pytest.raises(errors.AuthenticationError):
        Miosa(api_key=rotated["token"], base_url=mds.url, max_retries=0).projects.list()


def test_error_contract(client, mds):
    with pytest.raises(errors.AuthenticationError):
        Miosa(api_key="msk_not_a_key", base_url=mds.url, max_retries=0).projects.list()
    with pytest.raises(errors.ValidationError) as raised:
        client.projects.create("ok", slug="Bad_Slug")
    assert raised.value.status_code == 422
    assert raised.value.code == "VALIDATION_ERROR"
    assert raised.value.details["field"] == "slug"
    slug = unique("taken")
    client.projects.create("first", slug=slug)
    with pytest.raises(errors.MiosaError) as raised:
        client.projects.create("second", slug=slug)
    assert raised.value.status_code == 409 and raised.value.code == "PROJECT_SLUG_TAKEN"
    with pytest.raises(errors.PayloadTooLargeError):
        client.projects.create("big", description="x" * (2 * 1024 * 1024))
    # The /v1 alias and the env-var configuration the SDK documents.
    aliased = Miosa(api_key=mds.admin_key, base_url=f"{mds.url}/v1")
    assert isinstance(aliased.projects.list(), list)


def test_environment_configuration(mds, monkeypatch):
    monkeypatch.setenv("MIOSA_BASE_URL", mds.url)
    monkeypatch.setenv("MIOSA_API_KEY", mds.admin_key)
    project = Miosa().projects.create(unique("From Env"))
    assert project["environments"][0]["name"] == "production"
