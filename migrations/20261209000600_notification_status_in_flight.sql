-- A notification's aggregate status after each outcome read all its deliveries: for a
-- broadcast of N deliveries that is N reads per outcome group, O(N²) in all (a topic of
-- 10,000 members with two phones each: 20,000 outcomes, each group reading 20,000 rows).
-- While any delivery is still in flight the aggregate is `processing` whatever the others
-- are (`notification_status`), and one such delivery is found through this partial index
-- in one probe; only the outcome that settles the last one reads the whole aggregate.
CREATE INDEX deliveries_in_flight ON deliveries (notification_id)
    WHERE status IN ('pending', 'queued', 'sending', 'retrying');

CREATE OR REPLACE FUNCTION refresh_notification_statuses(ids uuid[]) RETURNS void
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
BEGIN
    UPDATE notifications n SET status = agg.status, updated_at = now()
    FROM unnest(ids) AS i(id)
    CROSS JOIN LATERAL (
        -- A scalar subquery with LIMIT, not EXISTS: the planner may turn an EXISTS into a
        -- hashed subplan that reads every in-flight delivery of every notification. COALESCE
        -- reads the whole aggregate only when no delivery is in flight, and OFFSET 0 keeps
        -- the subquery from being pulled up and evaluated twice.
        SELECT COALESCE(
            (SELECT 'processing' FROM deliveries u
             WHERE u.notification_id = i.id AND u.status IN ('pending', 'queued', 'sending', 'retrying')
             LIMIT 1),
            (SELECT notification_status(array_agg(d.status))
             FROM deliveries d WHERE d.notification_id = i.id HAVING count(*) > 0)) AS status
        OFFSET 0) agg
    WHERE n.id = i.id AND agg.status IS NOT NULL AND n.status IS DISTINCT FROM agg.status;
END
$$;
