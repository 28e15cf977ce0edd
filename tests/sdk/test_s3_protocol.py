"""S3 protocol details the conformance suites check, driven with boto3 and
raw (presigned) HTTP against the real server's S3 endpoint with the admin
key: request ids, presigned expiry limits, partNumber reads, conditional
answers, repeated completes, checksum mode, Date-signed requests, bucket
listing pages, bucket names, aws-chunked, copy ranges, v1 prefixes."""

from __future__ import annotations

import hashlib
import uuid
import xml.etree.ElementTree as ET
from email.utils import formatdate

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

MIB = 1024 * 1024


def admin_env(mds) -> dict[str, str]:
    env = {}
    for line in (mds.data_dir / "s3-admin.env").read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def s3_client(env: dict[str, str], **config):
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
        config=Config(retries={"max_attempts": 1}, **config),
    )


@pytest.fixture(scope="module")
def env(mds):
    return admin_env(mds)


@pytest.fixture(scope="module")
def s3(env):
    return s3_client(env)


@pytest.fixture()
def bucket(s3):
    name = f"proto-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def status_and_code(excinfo) -> tuple[int, str]:
    r = excinfo.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def test_errors_carry_the_request_id_of_their_header(s3, bucket):
    seen = {}
    s3.meta.events.register(
        "after-call.s3.GetObject", lambda http_response, **_: seen.update(r=http_response)
    )
    with pytest.raises(ClientError):
        s3.get_object(Bucket=bucket, Key="missing")
    body = ET.fromstring(seen["r"].content)
    header = seen["r"].headers["x-amz-request-id"]
    assert body.find("RequestId").text == header
    assert len(header) == 16
    ok = s3.head_bucket(Bucket=bucket)
    assert ok["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"] != header


def test_presigned_expiry_limits_and_preflight_without_origin(env, s3, bucket):
    s3.put_object(Bucket=bucket, Key="foo", Body=b"bar")
    params = {"Bucket": bucket, "Key": "foo"}
    # boto3 presigns with SigV2 (an Expires instant) unless told s3v4
    # (X-Amz-Expires seconds); both are held to a week.
    for signer in (s3, s3_client(env, signature_version="s3v4")):
        week = signer.generate_presigned_url("get_object", Params=params, ExpiresIn=604000)
        assert httpx.get(week).content == b"bar"
        for expires in (609901, -7):
            url = signer.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)
            answer = httpx.get(url)
            assert answer.status_code == 403, (url, answer.text)
            assert ET.fromstring(answer.content).find("Code").text == "AccessDenied"
        put = signer.generate_presigned_url("put_object", Params=params, ExpiresIn=-1000)
        assert httpx.put(put, content=b"overwritten").status_code == 403
    assert s3.get_object(**params)["Body"].read() == b"bar"

    preflight = httpx.request("OPTIONS", f"{s3.meta.endpoint_url}/{bucket}/foo")
    assert preflight.status_code == 400
    assert ET.fromstring(preflight.content).find("Code").text == "BadRequest"


def test_get_and_head_of_one_part(s3, bucket):
    key = "multi"
    sizes = [5 * MIB, 5 * MIB, 1234]
    data = [bytes([65 + i]) * size for i, size in enumerate(sizes)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number, body in enumerate(data, start=1):
        etag = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    # Part 2 re-sent: its last upload is the one completed.
    data[1] = b"Z" * sizes[1]
    parts[1]["ETag"] = s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload, PartNumber=2, Body=data[1]
    )["ETag"]
    with pytest.raises(ClientError) as early:
        s3.get_object(Bucket=bucket, Key=key, PartNumber=1)
    assert status_and_code(early) == (404, "NoSuchKey")
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    offset = 0
    for number, body in enumerate(data, start=1):
        head = s3.head_object(Bucket=bucket, Key=key, PartNumber=number)
        assert head["PartsCount"] == 3
        assert head["ContentLength"] == len(body)
        assert head["ETag"] == done["ETag"]
        got = s3.get_object(Bucket=bucket, Key=key, PartNumber=number)
        assert got["PartsCount"] == 3
        assert got["ETag"] == done["ETag"]
        assert got["ContentRange"] == f"bytes {offset}-{offset + len(body) - 1}/{sum(sizes)}"
        assert got["Body"].read() == body
        offset += len(body)
    for bad in (0, 4):
        with pytest.raises(ClientError) as out_of_range:
            s3.get_object(Bucket=bucket, Key=key, PartNumber=bad)
        assert status_and_code(out_of_range) == (400, "InvalidPart")
    with pytest.raises(ClientError) as both:
        s3.get_object(Bucket=bucket, Key=key, PartNumber=1, Range="bytes=0-1")
    assert status_and_code(both) == (400, "InvalidRequest")

    # An object uploaded whole is its own part 1, and has no part 2.
    s3.put_object(Bucket=bucket, Key="single", Body=b"body")
    whole = s3.get_object(Bucket=bucket, Key="single", PartNumber=1)
    assert whole["Body"].read() == b"body"
    assert "PartsCount" not in whole
    with pytest.raises(ClientError) as second:
        s3.get_object(Bucket=bucket, Key="single", PartNumber=2)
    assert status_and_code(second) == (400, "InvalidPart")


def test_not_modified_names_the_etag(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="foo", Body=b"bar")["ETag"]
    for kwargs in ({"IfNoneMatch": etag}, {"IfModifiedSince": "2100-01-01T00:00:00Z"}):
        with pytest.raises(ClientError) as unchanged:
            s3.get_object(Bucket=bucket, Key="foo", **kwargs)
        headers = unchanged.value.response["ResponseMetadata"]["HTTPHeaders"]
        assert unchanged.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
        assert headers["etag"] == etag
        assert "last-modified" in headers


def test_a_repeated_complete_gives_the_same_answer(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="again")["UploadId"]
    etag = s3.upload_part(
        Bucket=bucket, Key="again", UploadId=upload, PartNumber=1, Body=b"only part"
    )["ETag"]
    parts = {"Parts": [{"ETag": etag, "PartNumber": 1}]}
    first = s3.complete_multipart_upload(
        Bucket=bucket, Key="again", UploadId=upload, MultipartUpload=parts
    )
    second = s3.complete_multipart_upload(
        Bucket=bucket, Key="again", UploadId=upload, MultipartUpload=parts
    )
    assert first["ETag"] == second["ETag"]
    # Once the key is overwritten, the upload is gone for good; so is a
    # copy's claim to it.
    s3.copy_object(
        Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "again"}
    )
    s3.put_object(Bucket=bucket, Key="again", Body=b"other")
    with pytest.raises(ClientError) as gone:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="again", UploadId=upload, MultipartUpload=parts
        )
    assert status_and_code(gone) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as never:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="copy", UploadId=upload, MultipartUpload=parts
        )
    assert status_and_code(never) == (404, "NoSuchUpload")


def test_create_multipart_upload_echoes_its_checksum_algorithm(s3, bucket):
    sha = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="SHA256")
    assert sha["ChecksumAlgorithm"] == "SHA256"
    assert sha["ChecksumType"] == "COMPOSITE"
    crc = s3.create_multipart_upload(
        Bucket=bucket, Key="k", ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
    )
    assert crc["ChecksumAlgorithm"] == "CRC32"
    assert crc["ChecksumType"] == "FULL_OBJECT"
    plain = s3.create_multipart_upload(Bucket=bucket, Key="k")
    assert "ChecksumAlgorithm" not in plain


def test_checksums_are_sent_only_in_checksum_mode(env, bucket):
    # A client that validates nothing itself, so what is sent is what is seen.
    s3 = s3_client(env, response_checksum_validation="when_required")
    body = b"checked"
    sent = s3.put_object(Bucket=bucket, Key="c", Body=body, ChecksumAlgorithm="SHA256")
    want = sent["ChecksumSHA256"]
    assert want == __import__("base64").b64encode(hashlib.sha256(body).digest()).decode()
    assert "ChecksumSHA256" not in s3.head_object(Bucket=bucket, Key="c")
    assert "ChecksumSHA256" not in s3.get_object(Bucket=bucket, Key="c")
    assert s3.head_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")["ChecksumSHA256"] == want
    assert s3.get_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")["ChecksumSHA256"] == want


def test_sigv4_dated_by_date_instead_of_x_amz_date(env, bucket):
    s3 = s3_client(env)
    date = formatdate(usegmt=True)
    sent = {}

    def dated(params, **_):
        params["headers"]["Date"] = date

    s3.meta.events.register("before-call.s3.PutObject", dated)
    s3.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.update(request.headers)
    )
    s3.put_object(Bucket=bucket, Key="dated", Body=b"by Date")
    assert "X-Amz-Date" not in sent and "Date" in sent
    assert s3.get_object(Bucket=bucket, Key="dated")["Body"].read() == b"by Date"


def test_list_buckets_in_pages(s3):
    prefix = f"page-{uuid.uuid4().hex[:8]}-"
    names = [f"{prefix}{i}" for i in range(3)]
    for name in names:
        s3.create_bucket(Bucket=name)
    seen, token = [], None
    while True:
        kwargs = {"ContinuationToken": token} if token else {}
        page = s3.list_buckets(MaxBuckets=2, Prefix=prefix, **kwargs)
        seen += [b["Name"] for b in page["Buckets"]]
        assert len(page["Buckets"]) <= 2
        token = page.get("ContinuationToken")
        if not token:
            break
    assert seen == names
    assert [b["Name"] for b in s3.list_buckets(Prefix=prefix)["Buckets"]] == names


def test_bucket_names_with_a_dot_beside_a_dash_are_refused(s3):
    for name in ("foo.-bar", "foo-.bar"):
        with pytest.raises(ClientError) as bad:
            s3.create_bucket(Bucket=name)
        assert status_and_code(bad) == (400, "InvalidBucketName")


def test_aws_chunked_is_not_stored_as_content_encoding(s3, bucket):
    for sent, kept in (
        ("gzip, aws-chunked", "gzip"),
        ("aws-chunked, gzip", "gzip"),
        ("deflate, gzip", "deflate, gzip"),
        ("aws-chunked", None),
    ):
        s3.put_object(Bucket=bucket, Key="enc", Body=b"x", ContentEncoding=sent)
        assert s3.head_object(Bucket=bucket, Key="enc").get("ContentEncoding") == kept, sent


def test_upload_part_copy_past_the_source_is_invalid_range(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"12345")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    source = {"Bucket": bucket, "Key": "src"}
    with pytest.raises(ClientError) as past:
        s3.upload_part_copy(
            Bucket=bucket, Key="dst", UploadId=upload, PartNumber=1,
            CopySource=source, CopySourceRange="bytes=0-21",
        )
    assert status_and_code(past) == (416, "InvalidRange")
    with pytest.raises(ClientError) as malformed:
        s3.upload_part_copy(
            Bucket=bucket, Key="dst", UploadId=upload, PartNumber=1,
            CopySource=source, CopySourceRange="bytes=3-1",
        )
    assert status_and_code(malformed) == (400, "InvalidArgument")
    ok = s3.upload_part_copy(
        Bucket=bucket, Key="dst", UploadId=upload, PartNumber=1,
        CopySource=source, CopySourceRange="bytes=1-3",
    )
    assert ok["CopyPartResult"]["ETag"].strip('"') == hashlib.md5(b"234").hexdigest()


def test_list_objects_v1_sends_its_prefix_as_given(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a b%/c", Body=b"")
    # boto3 asks for encoding-type=url and decodes keys and common
    # prefixes, but not v1's top-level Prefix.
    for prefix in ("a b%", "\n"):
        v1 = s3.list_objects(Bucket=bucket, Prefix=prefix, Delimiter="/")
        assert v1["Prefix"] == prefix
    v1 = s3.list_objects(Bucket=bucket, Prefix="a b%", Delimiter="/")
    assert v1["CommonPrefixes"] == [{"Prefix": "a b%/"}]
    v2 = s3.list_objects_v2(Bucket=bucket, Prefix="a b%", Delimiter="/")
    assert v2["Prefix"] == "a b%"
    assert v2["CommonPrefixes"] == [{"Prefix": "a b%/"}]


# Three 5 MiB parts of "A", "B" and "C": their checksums and the object's,
# as S3 computes them (the values of the upstream ceph/s3-tests).
THREE = [b"A" * 5 * MIB, b"B" * 5 * MIB, b"C" * 5 * MIB]
MULTIPART_SUMS = {
    "SHA256": ("COMPOSITE", [
        "275VF5loJr1YYawit0XSHREhkFXYkkPKGuoK0x9VKxI=",
        "mrHwOfjTL5Zwfj74F05HOQGLdUb7E5szdCbxgUSq6NM=",
        "Vw7oB/nKQ5xWb3hNgbyfkvDiivl+U+/Dft48nfJfDow=",
    ], "uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4=-3"),
    "SHA1": ("COMPOSITE", [
        "iIaTCGbm+vdVjNqIMF2S0T7ibMk=",
        "LS/TJ32bAVKEwRu+sE3X7awh/lk=",
        "6DDwovUaHwrKNXDMzOGbuvj9kxI=",
    ], "sizjvY4eud3MrcHdZM3cQ/ol39o=-3"),
    "CRC32": ("FULL_OBJECT", ["JRTCyQ==", "QoZTGg==", "YAgjqw=="], "WgDhBQ=="),
    "CRC32C": ("FULL_OBJECT", ["MDaLrw==", "TH4EZg==", "Z7mBIQ=="], "xU+Krw=="),
    "CRC64NVME": ("FULL_OBJECT", ["L/E4WYn8v98=", "xW1l19VobYM=", "cK5MnNaWrW4="], "i+6LR0y3eFo="),
}


@pytest.mark.parametrize("algorithm", list(MULTIPART_SUMS))
def test_multipart_checksums_are_made_of_the_parts(env, bucket, algorithm):
    s3 = s3_client(env, response_checksum_validation="when_required")
    kind, part_sums, whole = MULTIPART_SUMS[algorithm]
    field = "Checksum" + algorithm
    created = s3.create_multipart_upload(
        Bucket=bucket, Key="mp", ChecksumAlgorithm=algorithm, ChecksumType=kind
    )
    assert (created["ChecksumAlgorithm"], created["ChecksumType"]) == (algorithm, kind)
    upload = created["UploadId"]
    listed = []
    for number, (body, want) in enumerate(zip(THREE, part_sums), start=1):
        # botocore computes CRC32C and CRC64NVME only with awscrt: those are
        # sent as values, which the server checks.
        crt = algorithm in ("CRC32C", "CRC64NVME")
        sent = s3.upload_part(
            Bucket=bucket, Key="mp", UploadId=upload, PartNumber=number, Body=body,
            **({field: want} if crt else {"ChecksumAlgorithm": algorithm}),
        )
        assert sent[field] == want
        listed.append({"ETag": sent["ETag"], "PartNumber": number, field: want})
    parts = {"Parts": listed}
    with pytest.raises(ClientError) as bad:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload=parts,
            **{field: part_sums[0]},
        )
    assert status_and_code(bad) == (400, "BadDigest")
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload=parts, **{field: whole}
    )
    assert (done[field], done["ChecksumType"]) == (whole, kind)
    again = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload=parts
    )
    assert (again["ETag"], again[field]) == (done["ETag"], whole)

    assert field not in s3.head_object(Bucket=bucket, Key="mp")
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert (head[field], head["ChecksumType"]) == (whole, kind)
    for number, want in enumerate(part_sums, start=1):
        part = s3.get_object(Bucket=bucket, Key="mp", PartNumber=number, ChecksumMode="ENABLED")
        assert (part[field], part["ChecksumType"]) == (want, kind)
        assert part["Body"].read() == THREE[number - 1]

    attributes = s3.get_object_attributes(
        Bucket=bucket, Key="mp", ObjectAttributes=["Checksum", "ObjectParts", "ObjectSize"],
        MaxParts=2,
    )
    assert attributes["Checksum"][field] == whole
    assert attributes["Checksum"]["ChecksumType"] == kind
    assert attributes["ObjectSize"] == 15 * MIB
    parts = attributes["ObjectParts"]
    assert parts["TotalPartsCount"] == 3 and parts["IsTruncated"]
    assert [(p["PartNumber"], p["Size"], p[field]) for p in parts["Parts"]] == [
        (1, 5 * MIB, part_sums[0]), (2, 5 * MIB, part_sums[1])
    ]


def test_object_attributes_of_an_object_sent_whole(s3, bucket):
    sent = s3.put_object(Bucket=bucket, Key="one", Body=b"12345", ChecksumAlgorithm="SHA256")
    got = s3.get_object_attributes(
        Bucket=bucket, Key="one", ObjectAttributes=["ETag", "Checksum", "ObjectSize", "StorageClass"]
    )
    assert got["ETag"].strip('"') == hashlib.md5(b"12345").hexdigest()
    assert got["Checksum"]["ChecksumSHA256"] == sent["ChecksumSHA256"]
    assert got["ObjectSize"] == 5 and got["StorageClass"] == "STANDARD"
    assert "ObjectParts" not in got
    with pytest.raises(ClientError) as missing:
        s3.get_object_attributes(Bucket=bucket, Key="none", ObjectAttributes=["ETag"])
    assert status_and_code(missing) == (404, "NoSuchKey")


def test_a_listed_part_checksum_must_be_the_parts(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="SHA256")
    sent = s3.upload_part(
        Bucket=bucket, Key="mp", UploadId=upload["UploadId"], PartNumber=1, Body=b"only",
        ChecksumAlgorithm="SHA256",
    )
    wrong = MULTIPART_SUMS["SHA256"][1][0]
    with pytest.raises(ClientError) as bad:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="mp", UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [
                {"ETag": sent["ETag"], "PartNumber": 1, "ChecksumSHA256": wrong}
            ]},
        )
    assert status_and_code(bad) == (400, "InvalidPart")


def test_conditional_writes(s3, bucket):
    created = s3.put_object(Bucket=bucket, Key="once", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as exists:
        s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*")
    assert status_and_code(exists) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as stale:
        s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfMatch='"' + "0" * 32 + '"')
    assert status_and_code(stale) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as missing:
        s3.put_object(Bucket=bucket, Key="none", Body=b"x", IfMatch=created["ETag"])
    assert status_and_code(missing) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"first"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="none")
    s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfMatch=created["ETag"])
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"second"

    # Complete is conditional too; a refused one leaves the upload to retry.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="once")["UploadId"]
    etag = s3.upload_part(
        Bucket=bucket, Key="once", UploadId=upload, PartNumber=1, Body=b"third"
    )["ETag"]
    parts = {"Parts": [{"ETag": etag, "PartNumber": 1}]}
    with pytest.raises(ClientError) as refused:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="once", UploadId=upload, MultipartUpload=parts, IfNoneMatch="*"
        )
    assert status_and_code(refused) == (412, "PreconditionFailed")
    s3.complete_multipart_upload(Bucket=bucket, Key="once", UploadId=upload, MultipartUpload=parts)
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"third"


def test_if_none_match_lets_exactly_one_concurrent_writer_create(env, bucket):
    from concurrent.futures import ThreadPoolExecutor

    def create(i: int) -> bool:
        client = s3_client(env)
        try:
            # Above the inline size, so the chunked write path is raced too.
            body = bytes([i]) * (64 * 1024 if i % 2 else 100)
            client.put_object(Bucket=bucket, Key="race", Body=body, IfNoneMatch="*")
            return True
        except ClientError as e:
            assert e.response["Error"]["Code"] == "PreconditionFailed"
            return False

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(create, range(16)))
    assert won.count(True) == 1
    winner = won.index(True)
    got = s3_client(env).get_object(Bucket=bucket, Key="race")["Body"].read()
    assert got == bytes([winner]) * len(got)
