-- The relay's `queued` mark after its commit skipped only deliveries a worker held. One a
-- worker had already claimed, failed and scheduled again (`retrying`, its next attempt in
-- the future) between the relay's commit and its mark was marked `queued` too, so its
-- status hid the wait for the retry. Now a `retrying` delivery is marked only when its
-- retry is due, i.e. it is the retry that relay just published.
CREATE OR REPLACE FUNCTION mark_queued(_ids uuid[]) RETURNS void
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    _unqueued CONSTANT text[] := ARRAY['pending', 'retrying'];
BEGIN
    UPDATE deliveries d SET status = 'queued', updated_at = now()
    WHERE d.id IN (SELECT l.id FROM deliveries l WHERE l.id = ANY(_ids) AND l.status = ANY(_unqueued)
                   FOR UPDATE SKIP LOCKED)
      AND (d.status = 'pending' OR d.next_attempt_at IS NULL OR d.next_attempt_at <= now());
END
$$;
