-- Accepting notifications (store/src/intake.rs, `insert`): the notifications, their
-- deliveries, in-app inbox items, outbox rows and `accepted` audit events of any number
-- of requests and tenants, in one statement. Parameters are parallel arrays: `:n_*` one
-- element per notification, `:d_*` one per delivery, `:h_*` one per stored subscriber a
-- notification's plan sends to; `:grace` is how much later than now the outbox rows of
-- deliveries due now and handed off (`:d_handed`) fall due (the API publishes those itself
-- right after the commit, and the relay only if it did not); the other deliveries due now
-- are due at once, for the relays.
--
-- A notification one of whose stored subscribers is gone, or was erased and created again
-- (another `created_at`), since the directory was read is not written at all: `w` locks
-- each one the plans name (`FOR KEY SHARE`, which an erasure's `FOR UPDATE` waits for).
-- A delivery the plan skips, or whose address the tenant suppressed on its channel, is
-- written `suppressed` with the reason, and gets no outbox row. A notification's status is
-- `notification_initial_status` of its deliveries' (the one rule, shared with Rust's
-- `NotificationStatus::initial`), and its `delivery_count` lets an outcome set the status
-- of a notification with one delivery without reading the others. The suppression list is
-- read by primary-key lookups, never scanned: each LATERAL subquery is fenced (`OFFSET 0`)
-- so the planner cannot turn it into a join that reads the whole table, and the
-- statement runs prepared on a connection whose generic plans probe indexes
-- (store/src/lib.rs, `indexed`). The joins between this statement's own rows (a batch of
-- 1,000 notifications and their deliveries) are hash joins, not nested loops.
--
-- An inbox item (and its in-app delivery's `sent_at`) is stamped with the database's clock,
-- as its readers compare it with `now()`: stamped with the API host's, an item from a host
-- whose clock runs ahead would stay hidden, and miss its live push, until the database's
-- clock caught up.
--
-- Returns the deliveries the suppression list stopped, and the notifications not written
-- with the subscribers that were erased (pairs, in order).
WITH given AS (
    SELECT * FROM unnest(:n_id::uuid[], :n_tenant_id::uuid[], :n_created_at::timestamptz[], :n_type::text[],
                         :n_priority::text[], :n_data::jsonb[], :n_content::jsonb[], :n_correlation_id::text[],
                         :n_send_at::timestamptz[], :n_key::text[], :n_workflow::text[], :n_retry::jsonb[],
                         :n_tags::jsonb[], :n_actor::text[], :n_traceparent::text[], :n_severity::text[],
                         :n_error_code::text[], :n_error_class::text[])
         AS u(id, tenant_id, created_at, type, priority, data, content, correlation_id, send_at, key,
              workflow, retry, tags, actor, traceparent, severity, error_code, error_class)),
 w AS (
    SELECT w.nid, w.subscriber_id, s.id IS NOT NULL AS held
    FROM unnest(:h_notification_id::uuid[], :h_subscriber_id::text[], :h_created_at::timestamptz[])
         AS w(nid, subscriber_id, created_at)
    JOIN given g ON g.id = w.nid
    LEFT JOIN LATERAL (
        SELECT s.id FROM subscribers s
        WHERE s.tenant_id = g.tenant_id AND s.id = w.subscriber_id AND s.created_at = w.created_at
        OFFSET 0 FOR KEY SHARE
    ) s ON true),
 u AS (
    SELECT g.* FROM given g
    WHERE g.id <> ALL (ARRAY(SELECT w.nid FROM w WHERE NOT w.held))),
 p AS (
    SELECT x.id, x.nid, u.tenant_id, u.created_at, u.traceparent, x.channel, x.recipient, x.rank, x.at, x.handed,
           x.subscriber_id, x.content, x.locale, x.deferred, x.skip, coalesce(x.skip, s.reason) AS reason,
           CASE WHEN x.skip IS NOT NULL THEN x.skip_message
                WHEN s.reason IS NOT NULL THEN 'the address is on the suppression list' END AS message
    FROM unnest(:d_id::uuid[], :d_notification_id::uuid[], :d_channel::text[], :d_recipient::text[],
                :d_rank::smallint[], :d_at::timestamptz[], :d_address::text[], :d_subscriber_id::text[],
                :d_content::jsonb[], :d_locale::text[], :d_skip::text[], :d_skip_message::text[],
                :d_deferred::timestamptz[], :d_handed::boolean[])
         AS x(id, nid, channel, recipient, rank, at, address, subscriber_id, content, locale, skip,
              skip_message, deferred, handed)
    JOIN u ON u.id = x.nid
    LEFT JOIN LATERAL (
        SELECT s.reason FROM suppressions s
        WHERE x.skip IS NULL AND s.tenant_id = u.tenant_id AND s.channel = x.channel AND s.address = x.address
        OFFSET 0
    ) s ON true),
 s AS (
    SELECT p.*, CASE WHEN p.reason IS NOT NULL THEN 'suppressed' WHEN p.channel = 'in_app' THEN 'delivered'
                     ELSE 'pending' END AS status
    FROM p),
 n AS (
    INSERT INTO notifications (id, tenant_id, type, priority, data, content, correlation_id, send_at,
                               idempotency_key, workflow, retry, status, delivery_count, created_at, updated_at,
                               severity, error_code, error_class)
    SELECT u.id, u.tenant_id, u.type, u.priority, u.data, coalesce(u.content, '{}'), u.correlation_id,
           u.send_at, u.key, u.workflow, u.retry, notification_initial_status(coalesce(g.statuses, '{}')),
           g.deliveries, u.created_at, u.created_at, u.severity, u.error_code, u.error_class
    FROM u LEFT JOIN (SELECT s.nid, array_agg(s.status) AS statuses, count(*)::int AS deliveries
                      FROM s GROUP BY s.nid) g
           ON g.nid = u.id),
 d AS (
    INSERT INTO deliveries (id, tenant_id, notification_id, channel, recipient, subscriber_id, content,
                            locale, status, last_error_code, last_error_message, next_attempt_at, sent_at,
                            created_at, updated_at)
    SELECT p.id, p.tenant_id, p.nid, p.channel, p.recipient, p.subscriber_id, p.content, p.locale, p.status,
           p.reason, p.message, CASE WHEN p.reason IS NULL THEN p.deferred END,
           CASE WHEN p.reason IS NULL AND p.channel = 'in_app' THEN greatest(p.at, now()) END,
           p.created_at, p.created_at
    FROM s p),
 i AS (
    INSERT INTO inbox_items (id, tenant_id, subscriber_id, notification_id, type, title, body, action_url,
                             tags, created_at)
    SELECT p.id, p.tenant_id, p.subscriber_id, p.nid, u.type, c.content->>'title', c.content->>'body',
           c.content->>'action_url', ARRAY(SELECT jsonb_array_elements_text(u.tags)),
           greatest(p.at, now())
    FROM p JOIN u ON u.id = p.nid CROSS JOIN LATERAL (SELECT coalesce(p.content, u.content) AS content) c
    WHERE p.channel = 'in_app' AND p.reason IS NULL),
 o AS (
    INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, available_at,
                        traceparent)
    SELECT p.tenant_id, p.nid, p.id, p.channel, 1, p.rank, coalesce(p.at, CASE WHEN p.handed THEN now() + :grace::interval ELSE now() END),
           p.traceparent
    FROM p
    WHERE p.reason IS NULL AND p.channel <> 'in_app'),
 a AS (
    INSERT INTO audit_events (tenant_id, notification_id, action, actor, created_at)
    SELECT u.tenant_id, u.id, 'accepted', u.actor, u.created_at FROM u)
SELECT array(SELECT p.id FROM p WHERE p.skip IS NULL AND p.reason IS NOT NULL),
       array(SELECT w.nid FROM w WHERE NOT w.held ORDER BY w.nid, w.subscriber_id),
       array(SELECT w.subscriber_id FROM w WHERE NOT w.held ORDER BY w.nid, w.subscriber_id)
