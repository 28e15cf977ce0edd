"""Server-side encryption on the S3 endpoint is refused, never ignored: a
request asking for SSE-C, SSE-S3 or SSE-KMS gets 501 NotImplemented and
stores nothing, and a read with SSE-C headers is refused too."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid

import pytest
from botocore.exceptions import ClientError

from test_s3_protocol import admin_env, s3_client, status_and_code

KEY = os.urandom(32)
SSE_C = {
    "SSECustomerAlgorithm": "AES256",
    "SSECustomerKey": base64.b64encode(KEY).decode(),
    "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(KEY).digest()).decode(),
}
SSE_S3 = {"ServerSideEncryption": "AES256"}
SSE_KMS = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "any"}


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


def keys(s3, bucket) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.parametrize("sse", [SSE_C, SSE_S3, SSE_KMS], ids=["sse-c", "sse-s3", "sse-kms"])
def test_writes_asking_for_encryption_are_refused_and_store_nothing(s3, bucket, sse):
    refused(s3.put_object, Bucket=bucket, Key="secret", Body=b"plaintext", **sse)
    refused(s3.create_multipart_upload, Bucket=bucket, Key="secret-mp", **sse)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain")
    refused(
        s3.copy_object, Bucket=bucket, Key="copy",
        CopySource={"Bucket": bucket, "Key": "plain"}, **sse,
    )
    assert keys(s3, bucket) == ["plain"]


def test_sse_c_parts_and_reads_are_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    refused(
        s3.upload_part, Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
        Body=b"part", **SSE_C,
    )
    assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload).get("Parts", []) == []
    refused(s3.get_object, Bucket=bucket, Key="plain", **SSE_C)
    with pytest.raises(ClientError) as head:
        s3.head_object(Bucket=bucket, Key="plain", **SSE_C)
    # A HEAD answer has no body: the status is all there is.
    assert head.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    copy_source_key = {
        "CopySourceSSECustomerAlgorithm": "AES256",
        "CopySourceSSECustomerKey": SSE_C["SSECustomerKey"],
        "CopySourceSSECustomerKeyMD5": SSE_C["SSECustomerKeyMD5"],
    }
    refused(
        s3.copy_object, Bucket=bucket, Key="copy",
        CopySource={"Bucket": bucket, "Key": "plain"}, **copy_source_key,
    )
    assert keys(s3, bucket) == ["plain"]
    # Without encryption headers everything still works.
    assert s3.get_object(Bucket=bucket, Key="plain")["Body"].read() == b"plain"
