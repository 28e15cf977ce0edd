-- The storage write path as functions: an object commit is one statement
-- (one round trip, one plan cached by the server) instead of a
-- transaction of six. The rules are those of 0006.

-- Counts one more reference to each chunk (a chunk listed twice counts
-- twice) and ends its write pin; false if any chunk has no row.
CREATE FUNCTION mds_storage_retain(p_chunks bytea[]) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint;
    counted bigint;
BEGIN
    WITH w AS (SELECT h, count(*) AS n FROM unnest(p_chunks) AS h GROUP BY h),
         c AS (UPDATE storage_blobs
                  SET refcount = refcount + w.n,
                      pinned_until = least(pinned_until, now())
                 FROM w WHERE hash = w.h RETURNING 1)
    SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM c) INTO wanted, counted;
    RETURN wanted = counted;
END $$;

-- Drops references; a chunk left without any is kept for p_grace seconds
-- so that reads holding its manifest can finish.
CREATE FUNCTION mds_storage_release(p_chunks bytea[], p_grace float8) RETURNS void
LANGUAGE sql AS $$
    WITH d AS (SELECT h, count(*) AS n FROM unnest(p_chunks) AS h GROUP BY h)
    UPDATE storage_blobs
       SET refcount = greatest(refcount - d.n, 0),
           pinned_until = greatest(pinned_until, now() + make_interval(secs => p_grace))
      FROM d WHERE hash = d.h;
$$;

-- Writes an object version, whose chunks are already counted, over
-- whatever the key held. A bucket deleted meanwhile fails its foreign key
-- (no lock of our own on the bucket row, which every writer would share).
CREATE FUNCTION mds_storage_write_object(
    p_bucket text, p_key text, p_size bigint, p_etag text, p_content_type text,
    p_metadata jsonb, p_chunks bytea[], p_chunk_sizes bigint[], p_grace float8
) RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    old_chunks bytea[];
    written timestamptz;
BEGIN
    -- Writers of one key in turn, so a replaced version is released once.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_bucket || '/' || p_key, 6));
    SELECT chunks INTO old_chunks FROM storage_objects
     WHERE bucket_id = p_bucket AND key = p_key;
    IF FOUND THEN
        PERFORM mds_storage_release(old_chunks, p_grace);
    END IF;
    INSERT INTO storage_objects
        (bucket_id, key, size, etag, content_type, metadata, chunks, chunk_sizes)
    VALUES (p_bucket, p_key, p_size, p_etag, p_content_type, p_metadata, p_chunks, p_chunk_sizes)
    ON CONFLICT (bucket_id, key) DO UPDATE SET
        size = EXCLUDED.size, etag = EXCLUDED.etag,
        content_type = EXCLUDED.content_type, metadata = EXCLUDED.metadata,
        chunks = EXCLUDED.chunks, chunk_sizes = EXCLUDED.chunk_sizes,
        last_modified = clock_timestamp()
    RETURNING last_modified INTO written;
    RETURN written;
END $$;

-- Counts the chunks' references and writes the object. Raises MDS02 if a
-- chunk was collected meanwhile.
CREATE FUNCTION mds_storage_put_object(
    p_bucket text, p_key text, p_size bigint, p_etag text, p_content_type text,
    p_metadata jsonb, p_chunks bytea[], p_chunk_sizes bigint[], p_grace float8
) RETURNS timestamptz
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT mds_storage_retain(p_chunks) THEN
        RAISE EXCEPTION 'a chunk of this write was collected' USING ERRCODE = 'MDS02';
    END IF;
    RETURN mds_storage_write_object(p_bucket, p_key, p_size, p_etag, p_content_type,
                                    p_metadata, p_chunks, p_chunk_sizes, p_grace);
END $$;
