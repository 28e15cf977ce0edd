"""The rest of the SDK's `services` surface, each call with its documented
arguments: what this server does not offer answers 501 NOT_IMPLEMENTED
naming the feature (never 404 "no such route"), after the key is checked."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from miosa import errors


def not_offered(call, feature: str) -> None:
    with pytest.raises(errors.MiosaError) as raised:
        result = call()
        if hasattr(result, "__next__"):
            next(result)
    assert raised.value.status_code == 501, raised.value
    assert raised.value.code == "NOT_IMPLEMENTED"
    assert feature in str(raised.value)


def test_service_calls_not_offered_say_so(client, mds):
    project = client.projects.create(f"surf-{uuid.uuid4().hex[:6]}")
    p = project["id"]
    env = project.get("environments", [{}])[0].get("id") or client.projects.environments(p)[0]["id"]
    web = client.services.create(p, "web", type="web")
    s = web["id"]
    s_ = client.services
    cases = [
        (lambda: s_.update(s, name="api", settings={"replicas": 2}), "updating a service"),
        (lambda: s_.restart(s, idempotency_key=uuid.uuid4().hex), "restarting an app service"),
        (lambda: s_.start(s), "starting an app service"),
        (lambda: s_.scale(s, replicas=2, region="local", limits={"cpu": 1}), "scaling"),
        (lambda: s_.redeploy(s), "redeploys"),
        (lambda: s_.deploy(s, source={"type": "git", "ref": "main"}, message="m"), "service releases"),
        (lambda: s_.releases(s), "service releases"),
        (lambda: s_.release(s, "rel_1"), "service releases"),
        (lambda: s_.events(s, "rel_1"), "release events"),
        (lambda: s_.wait_for_release(s, "rel_1", timeout=1, interval=0.1), "service releases"),
        (lambda: s_.rollback("rel_1", idempotency_key=uuid.uuid4().hex), "rollback"),
        (lambda: s_.redeploy_release("rel_1"), "release redeploys"),
        (lambda: s_.cancel_release("rel_1"), "cancelling"),
        (lambda: s_.remove_release("rel_1"), "removing a service release"),
        (lambda: s_.build_logs(s, build_id="latest", tail=10), "build logs"),
        (lambda: s_.iter_build_logs(s, build_id="latest", interval=0.1), "build logs"),
        (lambda: s_.runs(s), "cron runs"),
        (lambda: s_.enable_public_address(s, label="www"), "public addresses"),
        (lambda: s_.disable_public_address(s), "public addresses"),
        (lambda: s_.create_source_upload(filename="a.tgz", size=3, sha256="0" * 64), "source uploads"),
        (lambda: s_.setting_capabilities(p), "setting capabilities"),
        (lambda: s_.domains(p, s), "custom domains"),
        (lambda: s_.add_domain(p, s, "app.example.test"), "custom domains"),
        (lambda: s_.verify_domain(p, s, "dom_1"), "custom domains"),
        (lambda: s_.remove_domain(p, s, "dom_1"), "custom domains"),
        (lambda: s_.metrics(p, s, range="1h"), "service metrics"),
        (lambda: s_.protection(p, s), "password protection"),
        (lambda: s_.set_protection(p, s, "hunter2"), "password protection"),
        (lambda: s_.remove_protection(p, s), "password protection"),
        (lambda: s_.share_link(p, s, expires_in_s=60), "share links"),
        (lambda: s_.revoke_share_link(p, s, "lnk_1"), "share links"),
        (lambda: s_.waf(p, s), "firewall"),
        (lambda: s_.set_waf(p, s, enabled=True), "firewall"),
        (lambda: s_.set_attack_mode(p, s, True), "firewall"),
        (lambda: s_.remove_waf(p, s), "firewall"),
        (lambda: s_.previews(p), "preview settings"),
        (lambda: s_.set_preview_settings(p, enabled=True), "preview settings"),
        (lambda: s_.delete_preview_settings(p, "prv_1"), "preview settings"),
        (lambda: s_.log_drains(p, env), "log drains"),
        (lambda: s_.create_log_drain(p, env, url="https://logs.example.test"), "log drains"),
        (lambda: s_.update_log_drain(p, env, "drn_1", state="paused"), "log drains"),
        (lambda: s_.delete_log_drain(p, env, "drn_1"), "log drains"),
        (lambda: s_.test_log_drain(p, env, "drn_1"), "log drains"),
    ]
    for call, feature in cases:
        not_offered(call, feature)
    # Without a key the answer is 401, as for every route.
    assert httpx.get(f"{mds.url}/api/v1/services/{s}/runs").status_code == 401


def test_service_lifecycle_of_a_database_service(client, mds):
    project = client.projects.create(f"svcl-{uuid.uuid4().hex[:6]}")
    p = project["id"]
    prod = client.services.create(p, "Cache", type="database", settings={"engine": "redis"})
    staging = client.services.create(p, "Cache", type="database", environment="staging",
                                     settings={"engine": "redis"})
    for service in (prod, staging):
        deadline = time.monotonic() + 30
        while client.services.get(service["id"])["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    with pytest.raises(errors.MiosaError) as raised:
        client.services.start(prod["id"])
    assert raised.value.status_code == 409
    # Stopping staging's member leaves production running.
    assert client.services.stop(staging["id"]) == {"stopped": 1}
    assert client.services.get(staging["id"])["state"] == "stopped"
    assert client.services.get(prod["id"])["state"] == "running"
    started = client.services.start(staging["id"], idempotency_key=uuid.uuid4().hex)
    assert started["id"] == staging["id"]
    restarted = client.services.restart(prod["id"])
    assert restarted["id"] == prod["id"]
    # An app service stops (nothing serves yet) and says it cannot start here.
    web = client.services.create(p, "web", type="web")
    assert client.services.stop(web["id"]) == {"stopped": 0}


def test_database_lifecycle_and_volume_listing(client, mds):
    project = client.projects.create(f"life-{uuid.uuid4().hex[:6]}")
    db = client.databases.create(engine="redis", name="queue", project_id=project["id"])
    stopped = client.databases.stop(db["id"])
    assert stopped["state"] == "stopped"
    started = client.databases.start(db["id"])
    deadline = time.monotonic() + 30
    while started["state"] != "running":
        assert time.monotonic() < deadline, started
        time.sleep(0.1)
        started = client.databases.get(db["id"])
    volume = client.volumes.create(name=f"v-{uuid.uuid4().hex[:6]}", size_gb=1)
    assert volume["id"] in [v["id"] for v in client.volumes.list()]
    client.volumes.delete(volume["id"])
