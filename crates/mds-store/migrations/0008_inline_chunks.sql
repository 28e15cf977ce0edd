-- Small objects keep their one chunk in the chunk's row instead of a file:
-- still addressed by its hash, counted and collected the same way, but
-- written by the same statement that commits the object (durable with its
-- WAL record), so a small PUT is one statement and no file.

ALTER TABLE storage_blobs ADD COLUMN inline bytea;

CREATE FUNCTION mds_storage_put_inline_object(
    p_bucket text, p_key text, p_etag text, p_content_type text, p_metadata jsonb,
    p_hash bytea, p_data bytea, p_grace float8
) RETURNS timestamptz
LANGUAGE plpgsql AS $$
BEGIN
    -- The chunk's row with this reference counted; a row for this content
    -- (a file or inline) may exist, and then only gains the bytes.
    INSERT INTO storage_blobs (hash, size, refcount, pinned_until, inline)
    VALUES (p_hash, length(p_data), 1, now(), p_data)
    ON CONFLICT (hash) DO UPDATE
        SET refcount = storage_blobs.refcount + 1,
            pinned_until = least(storage_blobs.pinned_until, now()),
            inline = coalesce(storage_blobs.inline, EXCLUDED.inline);
    RETURN mds_storage_write_object(
        p_bucket, p_key, length(p_data)::bigint, p_etag, p_content_type, p_metadata,
        ARRAY[p_hash], ARRAY[length(p_data)::bigint], p_grace);
END $$;
