-- A row the broker refused (its queue full, or without a quorum) is parked: written back
-- due a backoff later in the relay's claim transaction, while the rest of the batch
-- commits (crates/outbox-relay/src/lib.rs). Writing it back needs its priority, so the
-- claim returns it.
DROP FUNCTION claim_outbox(bigint);
CREATE FUNCTION claim_outbox(_limit bigint)
RETURNS TABLE (tenant_id uuid, notification_id uuid, delivery_id uuid, channel text, attempt int, traceparent text,
               priority smallint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH claimed AS (
        DELETE FROM outbox o WHERE o.id IN (
            SELECT due.id FROM outbox due WHERE due.available_at <= now()
            ORDER BY due.priority DESC, due.available_at, due.id
            LIMIT _limit FOR UPDATE SKIP LOCKED)
        RETURNING o.id, o.tenant_id, o.notification_id, o.delivery_id, o.channel, o.attempt, o.priority,
                  o.available_at, o.traceparent)
    SELECT c.tenant_id, c.notification_id, c.delivery_id, c.channel, c.attempt, c.traceparent, c.priority
    FROM claimed c ORDER BY c.priority DESC, c.available_at, c.id;
END
$$;
