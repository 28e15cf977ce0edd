"""Managed Redis through the SDK's `databases` resource, used with redis-py
through the injected REDIS_URL."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import redis
from miosa import errors
from conftest import resolved


def test_redis_database_with_redis_py(client, mds):
    project = client.projects.create(f"rd-{uuid.uuid4().hex[:6]}")
    db = client.databases.create(engine="redis", project_id=project["id"], maxmemory="32mb")
    deadline = time.monotonic() + 30
    while client.databases.get(db["id"])["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    creds = client.databases.credentials(db["id"], )
    url = resolved(mds, project["id"], "production")["REDIS_URL"]
    assert creds["url"] == url

    r = redis.Redis.from_url(url)
    assert r.ping()
    r.set("session:1", "alice", ex=1)
    assert r.get("session:1") == b"alice"
    time.sleep(1.3)
    assert r.get("session:1") is None

    # Pub/sub through the same credentials.
    sub = redis.Redis.from_url(url).pubsub()
    sub.subscribe("events")
    assert sub.get_message(timeout=2)["type"] == "subscribe"
    assert r.publish("events", "hello") == 1
    message = sub.get_message(timeout=2)
    assert message["data"] == b"hello"

    # Staging is another instance; production's password does not open it.
    staging = resolved(mds, project["id"], "staging")["REDIS_URL"]
    assert redis.Redis.from_url(staging).get("session:1") is None
    user, password = url.split("//")[1].split("@")[0].split(":")
    forged = f"redis://{user}:{password}@{staging.split('@')[1]}"
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(forged).ping()

    with pytest.raises(errors.ValidationError) as raised:
        client.databases.create(engine="redis", project_id=project["id"], name="x", eviction="never")
    assert raised.value.details["field"] == "eviction"
    client.databases.delete(db["id"])
