-- Storage: buckets, objects as manifests of content-addressed chunks, and
-- the reference counts that let unreferenced chunks be collected.
--
-- A chunk (blob) is written to the blob backend before any row refers to
-- it. Its row is "pinned" first, so the collector leaves it alone while
-- the upload that wrote it commits; after that, refcount counts the object
-- versions and multipart parts that list it.

CREATE TABLE storage_buckets (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    -- NULL for a bucket made over S3 with the server's admin key.
    project_id  text REFERENCES projects (id),
    -- The storage binding that owns this bucket, if it came from attach.
    binding_id  text UNIQUE,
    visibility  text NOT NULL DEFAULT 'private',
    region      text NOT NULL DEFAULT 'us-east-1',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT storage_buckets_name_key UNIQUE (name)
);

CREATE TABLE storage_blobs (
    hash         bytea PRIMARY KEY,
    size         bigint NOT NULL,
    refcount     bigint NOT NULL DEFAULT 0,
    pinned_until timestamptz NOT NULL
);
CREATE INDEX storage_blobs_garbage ON storage_blobs (pinned_until) WHERE refcount = 0;

CREATE TABLE storage_objects (
    bucket_id     text NOT NULL REFERENCES storage_buckets (id),
    -- "C": S3 lists keys in byte order.
    key           text COLLATE "C" NOT NULL,
    size          bigint NOT NULL,
    etag          text NOT NULL,
    content_type  text NOT NULL,
    -- user metadata (x-amz-meta-*), checksums and standard headers
    metadata      jsonb NOT NULL DEFAULT '{}',
    chunks        bytea[] NOT NULL,
    chunk_sizes   bigint[] NOT NULL,
    last_modified timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bucket_id, key)
);

CREATE TABLE storage_uploads (
    id           text PRIMARY KEY,
    bucket_id    text NOT NULL REFERENCES storage_buckets (id),
    key          text COLLATE "C" NOT NULL,
    content_type text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX storage_uploads_bucket ON storage_uploads (bucket_id, key);

CREATE TABLE storage_upload_parts (
    upload_id     text NOT NULL REFERENCES storage_uploads (id),
    part_number   integer NOT NULL,
    size          bigint NOT NULL,
    -- hex MD5 of the part
    md5           text NOT NULL,
    chunks        bytea[] NOT NULL,
    chunk_sizes   bigint[] NOT NULL,
    last_modified timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upload_id, part_number)
);
