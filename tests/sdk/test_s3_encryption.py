"""Server-side encryption on the S3 endpoint, never silently ignored.

PutObject with SSE-C (the client's AES-256 key) or SSE-S3 stores
ciphertext: the chunk files on disk never hold the plaintext, an SSE-C
object reads back only with its key (400 without, 403 with another), and
the key itself is stored nowhere; multipart uploads are encrypted part by
part. What is not implemented (SSE-KMS, copies with encryption or of an
encrypted source) is refused with 501 NotImplemented and stores nothing."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import uuid
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from test_s3_protocol import admin_env, s3_client, status_and_code


def sse_c(key: bytes) -> dict[str, str]:
    return {
        "SSECustomerAlgorithm": "AES256",
        "SSECustomerKey": base64.b64encode(key).decode(),
        "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(key).digest()).decode(),
    }


KEY = os.urandom(32)
SSE_C = sse_c(KEY)
OTHER = sse_c(os.urandom(32))
SSE_S3 = {"ServerSideEncryption": "AES256"}
SSE_KMS = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "any"}
# Big enough for several 8 MiB chunks, so ranges cross chunk boundaries.
PLAIN = os.urandom(1024) * (17 * 1024 + 3)
MARKER = b"mds-plaintext-marker-" + uuid.uuid4().hex.encode()


@pytest.fixture(scope="module")
def s3(mds):
    return s3_client(admin_env(mds))


@pytest.fixture()
def bucket(s3):
    name = f"sse-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def refused(call, **kwargs):
    with pytest.raises(ClientError) as e:
        call(**kwargs)
    assert status_and_code(e) == (501, "NotImplemented"), e.value.response
    return e


def failed(call, **kwargs) -> tuple[int, str]:
    with pytest.raises(ClientError) as e:
        call(**kwargs)
    return status_and_code(e)


def keys(s3, bucket) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def stored_bytes(mds) -> bytes:
    """Every chunk file and the metadata database's files, concatenated."""
    out = bytearray()
    for path in Path(mds.data_dir).rglob("*"):
        if path.is_file() and path.stat().st_size < 64 * 1024 * 1024:
            try:
                out += path.read_bytes()
            except OSError:
                pass
    return bytes(out)


def test_sse_c_round_trip_needs_the_key(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="secret", Body=PLAIN, **SSE_C)
    assert put["SSECustomerAlgorithm"] == "AES256"
    assert put["SSECustomerKeyMD5"] == SSE_C["SSECustomerKeyMD5"]
    got = s3.get_object(Bucket=bucket, Key="secret", **SSE_C)
    assert got["Body"].read() == PLAIN
    assert got["SSECustomerKeyMD5"] == SSE_C["SSECustomerKeyMD5"]
    head = s3.head_object(Bucket=bucket, Key="secret", **SSE_C)
    assert head["ContentLength"] == len(PLAIN)
    assert head["SSECustomerAlgorithm"] == "AES256"
    # Ranges decrypt from their offset, across chunk boundaries.
    for first, last in ((0, 0), (5, 20), (8 * 1024 * 1024 - 7, 8 * 1024 * 1024 + 9),
                        (len(PLAIN) - 10, len(PLAIN) - 1)):
        part = s3.get_object(Bucket=bucket, Key="secret", Range=f"bytes={first}-{last}", **SSE_C)
        assert part["Body"].read() == PLAIN[first : last + 1], (first, last)

    # Without the key: 400; with another key: 403. HEAD alike.
    assert failed(s3.get_object, Bucket=bucket, Key="secret") == (400, "InvalidRequest")
    assert failed(s3.get_object, Bucket=bucket, Key="secret", **OTHER) == (403, "AccessDenied")
    assert failed(s3.head_object, Bucket=bucket, Key="secret")[0] == 400
    assert failed(s3.head_object, Bucket=bucket, Key="secret", **OTHER)[0] == 403
    # A presigned URL without the key headers opens nothing either.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "secret"})
    assert httpx.get(url).status_code == 400


def test_the_miosa_api_refuses_encrypted_objects_never_serving_ciphertext(client, mds, s3, bucket):
    s3.put_object(Bucket=bucket, Key="c", Body=PLAIN[:100], **SSE_C)
    s3.put_object(Bucket=bucket, Key="s", Body=PLAIN[:100], ServerSideEncryption="AES256")
    for key in ("c", "s"):
        # The SDK hands back a raw body for get_object: look at the answer.
        got = httpx.get(
            f"{mds.url}/api/v1/storage/buckets/{bucket}/objects/{key}",
            headers={"Authorization": f"Bearer {mds.admin_key}"},
        )
        assert got.status_code == 409 and got.json()["error"]["code"] == "OBJECT_ENCRYPTED"
        assert PLAIN[:16] not in client.storage.get_object(bucket, key)
        signed = client.storage.presign(bucket, key=key)
        assert httpx.get(signed["url"]).status_code == 409


def test_sse_c_requests_are_checked(s3, bucket):
    bad_md5 = dict(SSE_C, SSECustomerKeyMD5=OTHER["SSECustomerKeyMD5"])
    assert failed(s3.put_object, Bucket=bucket, Key="k", Body=b"x", **bad_md5) == (
        400, "InvalidArgument")
    short = sse_c(os.urandom(16))
    assert failed(s3.put_object, Bucket=bucket, Key="k", Body=b"x", **short) == (
        400, "InvalidArgument")
    both = dict(SSE_C, **SSE_S3)
    assert failed(s3.put_object, Bucket=bucket, Key="k", Body=b"x", **both) == (
        400, "InvalidArgument")
    assert keys(s3, bucket) == []
    # A key sent for an object that has none is refused too.
    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain")
    assert failed(s3.get_object, Bucket=bucket, Key="plain", **SSE_C) == (400, "InvalidRequest")


def test_sse_s3_round_trip(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="sealed", Body=PLAIN, **SSE_S3)
    assert put["ServerSideEncryption"] == "AES256"
    got = s3.get_object(Bucket=bucket, Key="sealed")
    assert got["ServerSideEncryption"] == "AES256"
    assert got["Body"].read() == PLAIN
    part = s3.get_object(Bucket=bucket, Key="sealed", Range="bytes=100-199")
    assert part["Body"].read() == PLAIN[100:200]
    assert s3.head_object(Bucket=bucket, Key="sealed")["ServerSideEncryption"] == "AES256"


def test_content_md5_and_checksums_are_of_the_plaintext(s3, bucket):
    body = b"checked plaintext"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    for sse in (SSE_C, SSE_S3):
        put = s3.put_object(
            Bucket=bucket, Key="md5", Body=body, ContentMD5=md5, ChecksumAlgorithm="SHA256", **sse
        )
        assert put["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
        wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        assert failed(
            s3.put_object, Bucket=bucket, Key="bad", Body=body, ContentMD5=wrong, **sse
        ) == (400, "BadDigest")
    assert keys(s3, bucket) == ["md5"]


def test_nothing_stored_holds_the_plaintext_or_the_key(mds, s3, bucket):
    # Incompressible around the marker, so a stored plaintext would show.
    body = os.urandom(40000) + MARKER + os.urandom(40000)
    s3.put_object(Bucket=bucket, Key="c", Body=body, **SSE_C)
    s3.put_object(Bucket=bucket, Key="s", Body=body, **SSE_S3)
    # The same bytes stored twice encrypted share no chunk with each other.
    s3.put_object(Bucket=bucket, Key="c2", Body=body, **SSE_C)
    # The control: an unencrypted object's bytes are found where they lie.
    control = b"mds-control-" + uuid.uuid4().hex.encode()
    s3.put_object(Bucket=bucket, Key="p", Body=os.urandom(40000) + control + os.urandom(40000))
    on_disk = stored_bytes(mds)
    assert control in on_disk
    assert MARKER not in on_disk
    assert KEY not in on_disk
    assert SSE_C["SSECustomerKey"].encode() not in on_disk
    assert s3.get_object(Bucket=bucket, Key="c2", **SSE_C)["Body"].read() == body
    # The ETag is not the plaintext's MD5, which would give it away.
    etag = s3.head_object(Bucket=bucket, Key="c", **SSE_C)["ETag"].strip('"')
    assert etag != hashlib.md5(body).hexdigest()
    assert etag != s3.head_object(Bucket=bucket, Key="c2", **SSE_C)["ETag"].strip('"')


def test_sse_kms_is_refused_and_stores_nothing(s3, bucket):
    refused(s3.put_object, Bucket=bucket, Key="secret", Body=b"plaintext", **SSE_KMS)
    assert keys(s3, bucket) == []


def upload_in_parts(s3, bucket, key, parts, create=None, each=None):
    create = create or {}
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    listed = []
    for number, body in enumerate(parts, start=1):
        etag = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body, **(each or {})
        )["ETag"]
        listed.append({"ETag": etag, "PartNumber": number})
    return upload, listed


@pytest.mark.parametrize("sse", [SSE_C, SSE_S3], ids=["sse-c", "sse-s3"])
def test_multipart_uploads_are_encrypted_part_by_part(mds, s3, bucket, sse):
    marker = b"mds-mp-marker-" + uuid.uuid4().hex.encode()
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(3000) + marker + os.urandom(3000)]
    plain = b"".join(parts)
    customer = sse if sse is SSE_C else {}
    created = s3.create_multipart_upload(Bucket=bucket, Key="mp-probe", **sse)
    if sse is SSE_C:
        assert created["SSECustomerKeyMD5"] == SSE_C["SSECustomerKeyMD5"]
    else:
        assert created["ServerSideEncryption"] == "AES256"
    s3.abort_multipart_upload(Bucket=bucket, Key="mp-probe", UploadId=created["UploadId"])

    upload, listed = upload_in_parts(s3, bucket, "mp", parts, create=sse, each=customer)
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": listed}
    )
    assert s3.get_object(Bucket=bucket, Key="mp", **customer)["Body"].read() == plain
    edge = len(parts[0])
    for first, last in ((edge - 5, edge + 5), (1, edge - 1), (edge, len(plain) - 1)):
        got = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={first}-{last}", **customer)
        assert got["Body"].read() == plain[first : last + 1], (first, last)
    second = s3.get_object(Bucket=bucket, Key="mp", PartNumber=2, **customer)
    assert second["Body"].read() == parts[1]
    assert marker not in stored_bytes(mds)
    if sse is SSE_C:
        assert failed(s3.get_object, Bucket=bucket, Key="mp") == (400, "InvalidRequest")
        assert failed(s3.get_object, Bucket=bucket, Key="mp", **OTHER) == (403, "AccessDenied")


def test_parts_of_an_sse_c_upload_need_its_key(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", **SSE_C)["UploadId"]
    part = {"Bucket": bucket, "Key": "mp", "UploadId": upload, "PartNumber": 1, "Body": b"x"}
    assert failed(s3.upload_part, **part) == (400, "InvalidRequest")
    assert failed(s3.upload_part, **part, **OTHER) == (400, "InvalidRequest")
    assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload).get("Parts", []) == []
    # And a plain upload takes no key.
    plain = s3.create_multipart_upload(Bucket=bucket, Key="plain")["UploadId"]
    assert failed(
        s3.upload_part, Bucket=bucket, Key="plain", UploadId=plain, PartNumber=1, Body=b"x",
        **SSE_C,
    ) == (400, "InvalidRequest")


def test_the_transfer_manager_round_trips_sse_c(s3, bucket):
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    data = os.urandom(12 * 1024 * 1024 + 17)
    s3.upload_fileobj(io.BytesIO(data), bucket, "big", ExtraArgs=SSE_C, Config=config)
    out = io.BytesIO()
    s3.download_fileobj(bucket, "big", out, ExtraArgs=SSE_C, Config=config)
    assert out.getvalue() == data
    assert s3.head_object(Bucket=bucket, Key="big", **SSE_C)["ContentLength"] == len(data)


def test_sse_kms_multipart_and_encrypted_copies_are_refused(s3, bucket):
    refused(s3.create_multipart_upload, Bucket=bucket, Key="secret-mp", **SSE_KMS)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain")
    for sse in (SSE_C, SSE_S3, SSE_KMS):
        refused(
            s3.copy_object, Bucket=bucket, Key="copy",
            CopySource={"Bucket": bucket, "Key": "plain"}, **sse,
        )
    assert keys(s3, bucket) == ["plain"]


def test_copies_of_encrypted_objects_are_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="secret", Body=b"secret", **SSE_C)
    s3.put_object(Bucket=bucket, Key="sealed", Body=b"sealed", **SSE_S3)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    sealed_upload = s3.create_multipart_upload(Bucket=bucket, Key="mp2", **SSE_S3)["UploadId"]
    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain")
    copy_source_key = {
        "CopySourceSSECustomerAlgorithm": "AES256",
        "CopySourceSSECustomerKey": SSE_C["SSECustomerKey"],
        "CopySourceSSECustomerKeyMD5": SSE_C["SSECustomerKeyMD5"],
    }
    refused(
        s3.copy_object, Bucket=bucket, Key="copy",
        CopySource={"Bucket": bucket, "Key": "secret"}, **copy_source_key,
    )
    for source in ("secret", "sealed"):
        refused(
            s3.copy_object, Bucket=bucket, Key="copy",
            CopySource={"Bucket": bucket, "Key": source},
        )
        refused(
            s3.upload_part_copy, Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
            CopySource={"Bucket": bucket, "Key": source},
        )
    # Nor is a plain object copied into an encrypted upload.
    refused(
        s3.upload_part_copy, Bucket=bucket, Key="mp2", UploadId=sealed_upload, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "plain"},
    )
    assert sorted(keys(s3, bucket)) == ["plain", "sealed", "secret"]
    assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload).get("Parts", []) == []
