"""Storage with independent clients: the MIOSA SDK's `storage` resource,
boto3 in both checksum modes and aws-cli against the S3 endpoint with the
credentials an attached storage service injects, and attacks from another
project, another environment, a forged signature and a tampered URL."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from miosa import errors
from conftest import resolved

AWS = str(Path(sys.executable).with_name("aws"))


def attach_storage(client, mds, name: str) -> tuple[dict, dict[str, str], dict[str, str]]:
    project = client.projects.create(f"{name}-{uuid.uuid4().hex[:6]}")
    answer = httpx.post(
        f"{mds.url}/api/v1/projects/{project['id']}/data-services?wait=true",
        json={"type": "storage"},
        headers={"Authorization": f"Bearer {mds.admin_key}"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["data"]["state"] == "running"
    return (
        project,
        resolved(mds, project["id"], "production"),
        resolved(mds, project["id"], "staging"),
    )


def s3_from_env(env: dict[str, str], mode: str = "when_supported", **overrides):
    """A stock boto3 client configured only from the injected variables."""
    config = Config(
        request_checksum_calculation=mode,
        response_checksum_validation=mode,
        retries={"max_attempts": 1},
    )
    return boto3.client(
        "s3",
        endpoint_url=overrides.get("endpoint", env["AWS_ENDPOINT_URL_S3"]),
        aws_access_key_id=overrides.get("key_id", env["AWS_ACCESS_KEY_ID"]),
        aws_secret_access_key=overrides.get("secret", env["AWS_SECRET_ACCESS_KEY"]),
        region_name=env["AWS_REGION"],
        config=config,
    )


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


@pytest.fixture(scope="module")
def attached(client_module, mds):
    return attach_storage(client_module, mds, "st")


@pytest.fixture(scope="module")
def client_module(mds):
    from miosa import Miosa

    return Miosa(api_key=mds.admin_key, base_url=mds.url, max_retries=0)


def test_injected_names_cover_storage_and_aws(attached):
    _, prod, staging = attached
    for env in (prod, staging):
        for name in (
            "STORAGE_BUCKET",
            "STORAGE_ENDPOINT",
            "STORAGE_KEY_ID",
            "STORAGE_KEY_SECRET",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ):
            assert env[name], name
        assert env["AWS_REGION"] == "us-east-1"
        assert env["STORAGE_KEY_ID"] == env["AWS_ACCESS_KEY_ID"]
    assert prod["STORAGE_BUCKET"] != staging["STORAGE_BUCKET"]
    assert prod["STORAGE_KEY_SECRET"] != staging["STORAGE_KEY_SECRET"]


@pytest.mark.parametrize("mode", ["when_supported", "when_required"])
def test_boto3_objects_with_injected_credentials(attached, mode):
    _, env, _ = attached
    s3 = s3_from_env(env, mode)
    bucket = env["STORAGE_BUCKET"]
    prefix = f"{mode}/"

    s3.put_object(
        Bucket=bucket,
        Key=prefix + "hello.txt",
        Body=b"hello world",
        ContentType="text/plain",
        Metadata={"owner": "alice"},
        CacheControl="max-age=60",
    )
    got = s3.get_object(Bucket=bucket, Key=prefix + "hello.txt")
    assert got["Body"].read() == b"hello world"
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"owner": "alice"}
    assert got["CacheControl"] == "max-age=60"
    assert got["ETag"] == '"%s"' % hashlib.md5(b"hello world").hexdigest()
    head = s3.head_object(Bucket=bucket, Key=prefix + "hello.txt")
    assert head["ContentLength"] == 11
    ranged = s3.get_object(Bucket=bucket, Key=prefix + "hello.txt", Range="bytes=6-")
    assert ranged["Body"].read() == b"world"
    assert ranged["ContentRange"] == "bytes 6-10/11"

    # Content-MD5 is checked, and a mismatch stores nothing.
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as bad:
        s3.put_object(Bucket=bucket, Key=prefix + "bad", Body=b"data", ContentMD5=wrong)
    assert error_code(bad) == "BadDigest"
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key=prefix + "bad")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    # Multipart through the transfer manager (8 MiB parts), then ranges
    # across part boundaries.
    data = os.urandom(21 * 1024 * 1024 + 123)
    s3.upload_fileobj(io.BytesIO(data), bucket, prefix + "big.bin")
    big = s3.get_object(Bucket=bucket, Key=prefix + "big.bin")
    assert big["Body"].read() == data
    assert big["ETag"].strip('"').endswith("-3")
    part = s3.get_object(Bucket=bucket, Key=prefix + "big.bin", Range="bytes=8388600-8388700")
    assert part["Body"].read() == data[8388600:8388701]

    s3.copy_object(
        Bucket=bucket,
        Key=prefix + "copy.txt",
        CopySource={"Bucket": bucket, "Key": prefix + "hello.txt"},
    )
    assert s3.get_object(Bucket=bucket, Key=prefix + "copy.txt")["Body"].read() == b"hello world"

    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"{prefix}dir/{i}.txt", Body=str(i).encode())
    top = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == [prefix + "dir/"]
    assert [o["Key"] for o in top["Contents"]] == [
        prefix + k for k in ("big.bin", "copy.txt", "hello.txt")
    ]
    keys, token = [], None
    while True:
        kwargs = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "dir/", MaxKeys=2, **kwargs)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert keys == [f"{prefix}dir/{i}.txt" for i in range(5)]

    deleted = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": k} for k in keys] + [{"Key": prefix + "copy.txt"}]},
    )
    assert len(deleted["Deleted"]) == 6
    left = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert sorted(o["Key"] for o in left["Contents"]) == [prefix + "big.bin", prefix + "hello.txt"]


def test_boto3_multipart_api_and_abort(attached):
    _, env, _ = attached
    s3 = s3_from_env(env)
    bucket = env["STORAGE_BUCKET"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp/obj", ContentType="video/mp4")
    uid = upload["UploadId"]
    part1 = os.urandom(5 * 1024 * 1024)
    part2 = b"tail"
    e1 = s3.upload_part(Bucket=bucket, Key="mp/obj", UploadId=uid, PartNumber=1, Body=part1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="mp/obj", UploadId=uid, PartNumber=2, Body=part2)["ETag"]
    parts = s3.list_parts(Bucket=bucket, Key="mp/obj", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, len(part1)), (2, 4)]
    with pytest.raises(ClientError) as wrong:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="mp/obj", UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e2}, {"PartNumber": 2, "ETag": e2}]},
        )
    assert error_code(wrong) == "InvalidPart"
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp/obj", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    digest = hashlib.md5(hashlib.md5(part1).digest() + hashlib.md5(part2).digest()).hexdigest()
    assert done["ETag"] == f'"{digest}-2"'
    got = s3.get_object(Bucket=bucket, Key="mp/obj")
    assert got["ContentType"] == "video/mp4"
    assert got["Body"].read() == part1 + part2

    aborted = s3.create_multipart_upload(Bucket=bucket, Key="mp/aborted")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp/aborted", UploadId=aborted, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="mp/aborted", UploadId=aborted)
    with pytest.raises(ClientError) as gone:
        s3.list_parts(Bucket=bucket, Key="mp/aborted", UploadId=aborted)
    assert error_code(gone) == "NoSuchUpload"


def test_aws_cli_cp_sync_and_multipart(attached, tmp_path):
    _, env, _ = attached
    bucket = env["STORAGE_BUCKET"]
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    run_env.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    run_env["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    run_env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")

    def aws(*args: str) -> str:
        done = subprocess.run([AWS, *args], env=run_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    source = tmp_path / "site"
    (source / "css").mkdir(parents=True)
    (source / "index.html").write_text("<h1>hi</h1>")
    (source / "css" / "app.css").write_text("body{}")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))

    aws("s3", "cp", str(big), f"s3://{bucket}/cli/big.bin")
    aws("s3", "cp", f"s3://{bucket}/cli/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    aws("s3", "sync", str(source), f"s3://{bucket}/cli/site")
    listing = aws("s3", "ls", "--recursive", f"s3://{bucket}/cli/site/")
    assert "cli/site/index.html" in listing and "cli/site/css/app.css" in listing
    # A second sync has nothing to send.
    assert aws("s3", "sync", str(source), f"s3://{bucket}/cli/site").strip() == ""

    import json

    uid = json.loads(aws("s3api", "create-multipart-upload", "--bucket", bucket, "--key", "cli/mp"))["UploadId"]
    part = tmp_path / "part"
    part.write_bytes(b"z" * 1000)
    etag = json.loads(
        aws("s3api", "upload-part", "--bucket", bucket, "--key", "cli/mp", "--upload-id", uid,
            "--part-number", "1", "--body", str(part))
    )["ETag"]
    (tmp_path / "parts.json").write_text(json.dumps({"Parts": [{"PartNumber": 1, "ETag": etag}]}))
    aws("s3api", "complete-multipart-upload", "--bucket", bucket, "--key", "cli/mp", "--upload-id", uid,
        "--multipart-upload", f"file://{tmp_path / 'parts.json'}")
    head = json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", "cli/mp"))
    assert head["ContentLength"] == 1000


def test_keys_open_only_their_own_bucket(client, mds, attached):
    _, prod, staging = attached
    _, other, _ = attach_storage(client, mds, "victim")
    mine = s3_from_env(prod)
    other_s3 = s3_from_env(other)
    other_s3.put_object(Bucket=other["STORAGE_BUCKET"], Key="secret.txt", Body=b"theirs")

    # Another project's bucket, and this project's other environment.
    for bucket in (other["STORAGE_BUCKET"], staging["STORAGE_BUCKET"]):
        for call in (
            lambda: mine.get_object(Bucket=bucket, Key="secret.txt"),
            lambda: mine.put_object(Bucket=bucket, Key="planted", Body=b"x"),
            lambda: mine.list_objects_v2(Bucket=bucket),
            lambda: mine.delete_object(Bucket=bucket, Key="secret.txt"),
        ):
            with pytest.raises(ClientError) as denied:
                call()
            assert error_code(denied) in ("AccessDenied", "403"), denied.value.response
    # Copying their object into my bucket is reading it.
    with pytest.raises(ClientError) as copy:
        mine.copy_object(
            Bucket=prod["STORAGE_BUCKET"], Key="stolen",
            CopySource={"Bucket": other["STORAGE_BUCKET"], "Key": "secret.txt"},
        )
    assert error_code(copy) == "AccessDenied"
    assert [b["Name"] for b in mine.list_buckets()["Buckets"]] == [prod["STORAGE_BUCKET"]]
    with pytest.raises(ClientError) as create:
        mine.create_bucket(Bucket=f"mine-{uuid.uuid4().hex[:8]}")
    assert error_code(create) == "AccessDenied"

    # A forged secret, an unknown key, no signature at all.
    forged = s3_from_env(prod, secret="x" * 40)
    with pytest.raises(ClientError) as bad_sig:
        forged.get_object(Bucket=prod["STORAGE_BUCKET"], Key="anything")
    assert error_code(bad_sig) == "SignatureDoesNotMatch"
    unknown = s3_from_env(prod, key_id="MDS" + "0" * 26)
    with pytest.raises(ClientError) as bad_key:
        unknown.list_objects_v2(Bucket=prod["STORAGE_BUCKET"])
    assert error_code(bad_key) == "InvalidAccessKeyId"
    anonymous = httpx.get(f"{prod['AWS_ENDPOINT_URL_S3']}/{other['STORAGE_BUCKET']}/secret.txt")
    assert anonymous.status_code == 403
    assert other_s3.get_object(Bucket=other["STORAGE_BUCKET"], Key="secret.txt")["Body"].read() == b"theirs"

    # An S3 presigned URL is for one key and one method, until it expires.
    url = mine.generate_presigned_url(
        "get_object", Params={"Bucket": prod["STORAGE_BUCKET"], "Key": "hello"}, ExpiresIn=60
    )
    mine.put_object(Bucket=prod["STORAGE_BUCKET"], Key="hello", Body=b"presigned")
    assert httpx.get(url).content == b"presigned"
    assert httpx.get(url.replace("/hello?", "/other?")).status_code == 403
    assert httpx.put(url, content=b"overwrite").status_code == 403


def test_sdk_buckets_objects_and_presign(client, mds):
    project = client.projects.create(f"sdk-{uuid.uuid4().hex[:6]}")
    name = f"uploads-{uuid.uuid4().hex[:8]}"
    bucket = client.storage.create_bucket(name, project_id=project["id"])
    assert bucket["visibility"] == "private" and bucket["name"] == name
    bid = bucket["id"]
    assert client.storage.get_bucket(bid)["id"] == bid
    assert name in [b["name"] for b in client.storage.list_buckets()]

    put = client.storage.put_object(bid, "users/1/a.png", b"\x89PNG", content_type="image/png")
    assert put["data"]["etag"] == hashlib.md5(b"\x89PNG").hexdigest()
    assert client.storage.get_object(bid, "users/1/a.png") == b"\x89PNG"
    # The CLI's encoding of the same key reaches the same object.
    encoded = httpx.get(
        f"{mds.url}/api/v1/storage/buckets/{bid}/objects/users%2F1%2Fa.png",
        headers={"Authorization": f"Bearer {mds.admin_key}"},
    )
    assert encoded.content == b"\x89PNG"
    assert encoded.headers["content-type"] == "image/png"

    for i in range(5):
        client.storage.put_object(bid, f"logs/{i}", str(i).encode())
    page = client.storage.list_objects(bid, prefix="logs/", max_keys=2)
    assert [o["key"] for o in page] == ["logs/0", "logs/1"]
    page = client.storage.list_objects(bid, prefix="logs/", max_keys=10, marker="logs/2")
    assert [o["key"] for o in page] == ["logs/3", "logs/4"]
    assert client.storage.get_bucket(bid)["object_count"] == 6

    # Presigned GET and PUT work without a key; nothing else does.
    get = client.storage.presign(bid, key="users/1/a.png", method="GET", expires_in=60)
    assert get["expires_at"] and get["url"]
    assert httpx.get(get["url"]).content == b"\x89PNG"
    assert httpx.put(get["url"], content=b"x").status_code == 403
    assert httpx.get(get["url"].replace("a.png", "b.png")).status_code == 403
    tampered = get["url"].replace("X-Mds-Expires=", "X-Mds-Expires=1")
    assert httpx.get(tampered).status_code == 403
    sig_at = get["url"].index("X-Mds-Signature=") + len("X-Mds-Signature=")
    flipped = get["url"][:sig_at] + ("0" if get["url"][sig_at] != "0" else "1") + get["url"][sig_at + 1:]
    assert httpx.get(flipped).status_code == 403
    assert httpx.get(get["url"].split("?")[0]).status_code == 401
    put_url = client.storage.presign(bid, key="browser/upload.txt", method="PUT", expires_in=60)["url"]
    assert httpx.put(put_url, content=b"from a browser", headers={"Content-Type": "text/plain"}).status_code == 200
    assert client.storage.get_object(bid, "browser/upload.txt") == b"from a browser"
    short = client.storage.presign(bid, key="users/1/a.png", method="GET", expires_in=1)["url"]
    time.sleep(2.1)
    expired = httpx.get(short)
    assert expired.status_code == 403 and "expired" in expired.text

    client.storage.delete_object(bid, "users/1/a.png")
    with pytest.raises(errors.MiosaError) as not_empty:
        client.storage.delete_bucket(bid)
    assert "not empty" in str(not_empty.value).lower() or "BUCKET_NOT_EMPTY" in str(not_empty.value)
    forced = httpx.delete(
        f"{mds.url}/api/v1/storage/buckets/{bid}?force=true",
        headers={"Authorization": f"Bearer {mds.admin_key}"},
    )
    assert forced.status_code == 200
    with pytest.raises(errors.MiosaError):
        client.storage.get_bucket(bid)


def test_public_buckets_serve_reads_without_credentials(client, mds):
    project = client.projects.create(f"pub-{uuid.uuid4().hex[:6]}")
    public = client.storage.create_bucket(f"assets-{uuid.uuid4().hex[:8]}", project_id=project["id"], public=True)
    private = client.storage.create_bucket(f"private-{uuid.uuid4().hex[:8]}", project_id=project["id"])
    assert public["visibility"] == "public"
    for bucket in (public, private):
        client.storage.put_object(bucket["id"], "logo.svg", b"<svg/>", content_type="image/svg+xml")
    base = f"{mds.url}/api/v1/storage/buckets"
    assert httpx.get(f"{base}/{public['name']}/objects/logo.svg").content == b"<svg/>"
    assert httpx.get(f"{base}/{private['name']}/objects/logo.svg").status_code == 401
    # Public means readable, never writable.
    assert httpx.put(f"{base}/{public['name']}/objects/logo.svg", content=b"defaced").status_code == 401
    assert client.storage.get_object(public["id"], "logo.svg") == b"<svg/>"


def test_storage_scopes(client, mds):
    project = client.projects.create(f"scope-{uuid.uuid4().hex[:6]}")
    bucket = client.storage.create_bucket(f"scoped-{uuid.uuid4().hex[:8]}", project_id=project["id"])
    from miosa import Miosa

    def with_scopes(*scopes):
        token = client.api_keys.create(name="scoped", scopes=list(scopes))["token"]
        return Miosa(api_key=token, base_url=mds.url, max_retries=0)

    plain = with_scopes("projects:read")
    with pytest.raises(errors.MiosaError) as denied:
        plain.storage.list_buckets()
    assert "storage:read" in str(denied.value)
    reader = with_scopes("storage:read")
    assert reader.storage.get_bucket(bucket["id"])["id"] == bucket["id"]
    with pytest.raises(errors.MiosaError) as cannot_write:
        reader.storage.put_object(bucket["id"], "k", b"v")
    assert "storage:write" in str(cannot_write.value)
    writer = with_scopes("storage:read", "storage:write")
    writer.storage.put_object(bucket["id"], "k", b"v")
    assert reader.storage.get_object(bucket["id"], "k") == b"v"


def test_aws_chunked_trailer_checksums_are_checked(attached):
    """What SDKs send over HTTPS by default: an aws-chunked body with the
    CRC32 in a trailer. The trailer is checked before anything is stored."""
    import zlib

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    _, env, _ = attached
    bucket = env["STORAGE_BUCKET"]
    data = b"abc" * 100_000

    def put(key: str, crc: str) -> httpx.Response:
        body = b""
        for i in range(0, len(data), 65536):
            piece = data[i : i + 65536]
            body += b"%x\r\n" % len(piece) + piece + b"\r\n"
        body += b"0\r\nx-amz-checksum-crc32:" + crc.encode() + b"\r\n\r\n"
        url = f"{env['AWS_ENDPOINT_URL_S3']}/{bucket}/{key}"
        headers = {
            "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "content-encoding": "aws-chunked",
            "x-amz-trailer": "x-amz-checksum-crc32",
            "x-amz-decoded-content-length": str(len(data)),
            "content-length": str(len(body)),
            "x-amz-sdk-checksum-algorithm": "CRC32",
        }
        request = AWSRequest(method="PUT", url=url, data=body, headers=headers)
        credentials = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
        SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
        return httpx.put(url, content=body, headers=dict(request.headers.items()))

    good = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert put("trailer/good", good).status_code == 200
    bad = put("trailer/bad", "AAAAAA==")
    assert bad.status_code == 400 and b"BadDigest" in bad.content
    s3 = s3_from_env(env)
    got = s3.get_object(Bucket=bucket, Key="trailer/good", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got["ChecksumCRC32"] == good
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="trailer/bad")


def test_browsers_can_use_presigned_urls_from_any_origin(client, mds):
    project = client.projects.create(f"cors-{uuid.uuid4().hex[:6]}")
    bucket = client.storage.create_bucket(f"browser-{uuid.uuid4().hex[:8]}", project_id=project["id"])
    url = client.storage.presign(bucket["id"], key="avatar.png", method="PUT", expires_in=60)["url"]
    origin = {"Origin": "https://app.example.com"}
    preflight = httpx.options(
        url,
        headers={
            **origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type"
    put = httpx.put(url, content=b"\x89PNG", headers={**origin, "Content-Type": "image/png"})
    assert put.status_code == 200 and put.headers["access-control-allow-origin"] == "*"
    get_url = client.storage.presign(bucket["id"], key="avatar.png", method="GET", expires_in=60)["url"]
    got = httpx.get(get_url, headers=origin)
    assert got.content == b"\x89PNG" and "etag" in got.headers["access-control-expose-headers"]
