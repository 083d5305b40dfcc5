-- The relay keeps at most `relay.max_ready` messages ready in each channel's queue, so the
-- outbox, claimed most urgent first, stays the real queue and an urgent message overtakes
-- a backlog (ARCHITECTURE.md, "Priority"). The claim takes, per channel, at most the room
-- its queue has left, and of those the most urgent up to the batch's limit.
--
-- A channel's rows are read by their own index, in claim order; the index over all
-- channels is not read any more.
CREATE INDEX outbox_channel_claim ON outbox (channel, priority DESC, available_at, id);
DROP INDEX outbox_claim;

DROP FUNCTION claim_outbox(bigint);
CREATE FUNCTION claim_outbox(_limit bigint, _channels text[], _rooms bigint[])
RETURNS TABLE (tenant_id uuid, notification_id uuid, delivery_id uuid, channel text, attempt int, traceparent text,
               priority smallint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
#variable_conflict use_column
BEGIN
    -- Each channel's candidates are locked as they are read, up to its room or the limit,
    -- whichever is less; those the limit then leaves out stay locked (skipped by other
    -- relays) until this transaction ends, and are due again.
    RETURN QUERY
    WITH claimed AS (
        DELETE FROM outbox o WHERE o.id IN (
            SELECT picked.id
            FROM unnest(_channels, _rooms) AS r(channel, room)
            CROSS JOIN LATERAL (
                SELECT due.id, due.priority, due.available_at FROM outbox due
                WHERE due.channel = r.channel AND due.available_at <= now()
                ORDER BY due.priority DESC, due.available_at, due.id
                LIMIT least(r.room, _limit) FOR UPDATE SKIP LOCKED) picked
            ORDER BY picked.priority DESC, picked.available_at, picked.id
            LIMIT _limit)
        RETURNING o.id, o.tenant_id, o.notification_id, o.delivery_id, o.channel, o.attempt, o.priority,
                  o.available_at, o.traceparent)
    SELECT c.tenant_id, c.notification_id, c.delivery_id, c.channel, c.attempt, c.traceparent, c.priority
    FROM claimed c ORDER BY c.priority DESC, c.available_at, c.id;
END
$$;
