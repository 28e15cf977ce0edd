"""Volumes through the official MIOSA SDK: create, attach to a sandbox,
list attachments, detach; one holder at a time; data outlives sandboxes;
snapshots; a real filesystem of the size asked for; bad input."""

from __future__ import annotations

import uuid

import httpx
import pytest
from miosa import errors

from conftest import resolved


def admin(mds) -> dict[str, str]:
    return {"Authorization": f"Bearer {mds.admin_key}"}


def name() -> str:
    return f"vol-{uuid.uuid4().hex[:8]}"


def test_sdk_attach_one_holder_at_a_time_and_the_data_stays(client, mds):
    volume = client.volumes.create(name=name(), size_gb=1)
    assert volume["state"] == "available" and volume["size_bytes"] == 1 << 30
    # As root with loop devices, a real ext4 filesystem of that size.
    assert volume["backend"] == "ext4" and volume["size_enforced"] is True

    a = client.sandboxes.create()
    b = client.sandboxes.create()
    attachment = client.volumes.attach(a.id, volume["id"], mount_path="/mnt/data")
    assert attachment["mount_path"] == "/mnt/data" and attachment["fencing_token"] >= 1
    assert [x["id"] for x in client.volumes.list_attachments(a.id)] == [attachment["id"]]
    wrote = a.exec.run("echo 'model weights' > /mnt/data/w.txt && df -k /mnt/data | tail -1")
    assert wrote.exit_code == 0, wrote.stderr
    assert int(wrote.stdout.split()[1]) < (1 << 30) // 1024  # the filesystem's own size

    # One holder at a time; the refusal names it.
    with pytest.raises(errors.MiosaError) as taken:
        client.volumes.attach(b.id, volume["id"], mount_path="/data")
    assert taken.value.status_code == 409 and a.id in str(taken.value)
    assert client.volumes.get(volume["id"])["attached_to"] == a.id
    with pytest.raises(errors.MiosaError) as busy:
        client.volumes.delete(volume["id"])
    assert busy.value.status_code == 409

    # Destroying the holder ends its lease; the data stays for the next.
    a.destroy()
    second = client.volumes.attach(b.id, volume["id"], mount_path="/data")
    assert second["fencing_token"] > attachment["fencing_token"]
    assert b.exec.run("cat /data/w.txt").stdout == "model weights\n"
    client.volumes.detach(b.id, second["id"])
    assert client.volumes.list_attachments(b.id) == []
    assert b.exec.run("ls /data 2>&1").exit_code != 0  # not mounted any more

    # Snapshot, change, restore (detached), and the old content is back.
    snap = httpx.post(f"{mds.url}/api/v1/volumes/{volume['id']}/snapshots", headers=admin(mds))
    assert snap.status_code == 201, snap.text
    client.volumes.attach(b.id, volume["id"], mount_path="/data")
    b.exec.run("echo changed > /data/w.txt")
    refused = httpx.post(
        f"{mds.url}/api/v1/volumes/{volume['id']}/restore",
        json={"snapshot_id": snap.json()["data"]["id"]},
        headers=admin(mds),
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "VOLUME_IN_USE"
    b.stop()  # stopping the holder also ends its lease
    restored = httpx.post(
        f"{mds.url}/api/v1/volumes/{volume['id']}/restore",
        json={"snapshot_id": snap.json()["data"]["id"]},
        headers=admin(mds),
    )
    assert restored.status_code == 200, restored.text
    b.resume()
    client.volumes.attach(b.id, volume["id"], mount_path="/data")
    assert b.exec.run("cat /data/w.txt").stdout == "model weights\n"
    b.destroy()
    client.volumes.delete(volume["id"])
    with pytest.raises(errors.NotFoundError):
        client.volumes.get(volume["id"])
    assert not (mds.data_dir / "volumes" / volume["id"]).exists()


def test_the_size_is_enforced_or_reported(client, mds):
    small = client.volumes.create(name=name(), size_gb=0, size_bytes=16 << 20)
    sandbox = client.sandboxes.create()
    client.volumes.attach(sandbox.id, small["id"], mount_path="/small")
    full = sandbox.exec.run("dd if=/dev/zero of=/small/big bs=1M count=64 2>&1")
    assert full.exit_code != 0 and "No space left" in full.stdout

    plain = client.volumes.create(name=name(), size_gb=0, size_bytes=16 << 20, backend="dir")
    assert plain["backend"] == "dir" and plain["size_enforced"] is False
    client.volumes.attach(sandbox.id, plain["id"], mount_path="/plain")
    sandbox.exec.run("head -c 100000 /dev/zero > /plain/f")
    assert client.volumes.get(plain["id"])["used_bytes"] == 100000
    sandbox.destroy()
    client.volumes.delete(small["id"])
    client.volumes.delete(plain["id"])


def test_bad_input_is_refused(client, mds):
    for body, field in [
        ({"name": name(), "size_gb": 0}, "size_gb"),
        ({"name": name(), "size_gb": -5}, "size_gb"),
        ({"name": name(), "size_bytes": 0}, "size_bytes"),
        ({"name": name(), "size_gb": 100000}, "size_gb"),
        ({"size_gb": 1}, "name"),
        ({"name": "a/b", "size_gb": 1}, "name"),
        ({"name": name(), "size_gb": 1, "backend": "nfs"}, "backend"),
    ]:
        answer = httpx.post(f"{mds.url}/api/v1/volumes", json=body, headers=admin(mds))
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["details"]["field"] == field
    volume = client.volumes.create(name=name(), size_gb=1)
    sandbox = client.sandboxes.create()
    for path in ["/", "/proc", "/proc/x", "/data/../etc", "relative", "/usr/lib/x", "/workspace"]:
        answer = httpx.post(
            f"{mds.url}/api/v1/computers/{sandbox.id}/volumes",
            json={"volume_id": volume["id"], "mount_path": path},
            headers=admin(mds),
        )
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["error"]["details"]["field"] == "mount_path"
    missing = httpx.post(
        f"{mds.url}/api/v1/computers/{sandbox.id}/volumes", json={}, headers=admin(mds)
    )
    assert missing.status_code == 422
    sandbox.destroy()
    gone = httpx.post(
        f"{mds.url}/api/v1/computers/{sandbox.id}/volumes",
        json={"volume_id": volume["id"]},
        headers=admin(mds),
    )
    assert gone.status_code == 409
    client.volumes.delete(volume["id"])


def test_a_volume_data_service_gives_each_environment_its_own(client, mds):
    project = client.projects.create(f"vols-{uuid.uuid4().hex[:6]}")
    # Every kind side by side on one project: their engine-side names
    # (all `project__environment`) are unique per kind only.
    for kind in ["postgres", "redis", "storage", "auth", "volume"]:
        answer = httpx.post(
            f"{mds.url}/api/v1/projects/{project['id']}/data-services?wait=true",
            json={"type": kind},
            headers=admin(mds),
        )
        assert answer.status_code == 201, (kind, answer.text)
        assert answer.json()["data"]["state"] == "running", (kind, answer.text)
    staging = resolved(mds, project["id"], "staging")
    production = resolved(mds, project["id"], "production")
    assert staging["VOLUME_ID"] != production["VOLUME_ID"]
    for name in ["DATABASE_URL", "REDIS_URL", "STORAGE_BUCKET", "AUTH_URL", "VOLUME_ID"]:
        assert name in staging, name
    sandbox = client.sandboxes.create(project_id=project["id"])
    volume_id = sandbox.exec.run("echo $VOLUME_ID").stdout.strip()
    assert volume_id == staging["VOLUME_ID"]
    client.volumes.attach(sandbox.id, volume_id, mount_path="/state")
    assert sandbox.exec.run("echo ok > /state/f && cat /state/f").stdout == "ok\n"
    with pytest.raises(errors.MiosaError):
        client.volumes.delete(volume_id)  # it belongs to the service
    sandbox.destroy()
