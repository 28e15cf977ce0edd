-- What a multipart part keeps beside its bytes: the IV it was encrypted
-- with (SSE-C, SSE-S3) and its checksums.
ALTER TABLE storage_upload_parts ADD COLUMN meta jsonb NOT NULL DEFAULT '{}'::jsonb;
