-- The worker's and the relay's hot statements as plpgsql functions whose plans are made
-- once per connection, and the notification's aggregate rule in one function.
--
-- Planning these statements for every call took as long as running them. A function's
-- `SET plan_cache_mode = force_generic_plan` makes each of its statements planned once and
-- cached for the session; with sequential, bitmap, hash-join and merge-join paths off as
-- well, that one plan reads `deliveries`, `notifications` and `outbox` by index probes
-- whatever the tables held when it was made (an empty table otherwise gets a sequential
-- scan, kept while the table grows). The settings apply inside these functions only.
-- tests/it/plans.rs checks every plan on an empty and on a filled database.
--
-- Where a statement reads deliveries by id and status, the statuses are variables, not
-- literals: literals would let the planner prove that the partial index
-- `deliveries_unsettled` holds every row wanted and weigh reading that index whole (on
-- few rows, cheaper than probing the primary key), a plan whose cost grows with the
-- backlog. A generic plan cannot see a variable's value, so the primary key is its only
-- index to read deliveries by.

-- The aggregate status of a notification from its deliveries' statuses, as
-- `domain::NotificationStatus::of`: `processing` while any is in flight; then `partial` if
-- some succeeded and some failed, `sent` if some succeeded, `failed` if only failures,
-- `cancelled` if all were cancelled. Suppressed deliveries count for nothing, so a
-- notification whose deliveries were all suppressed is `sent`. An inlined expression.
CREATE FUNCTION notification_status(statuses text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN statuses && ARRAY['pending', 'queued', 'sending', 'retrying'] THEN 'processing'
        WHEN statuses && ARRAY['sent', 'delivered'] AND statuses && ARRAY['failed', 'bounced', 'undelivered']
            THEN 'partial'
        WHEN statuses && ARRAY['sent', 'delivered'] THEN 'sent'
        WHEN statuses && ARRAY['failed', 'bounced', 'undelivered'] THEN 'failed'
        WHEN statuses && ARRAY['cancelled'] THEN 'cancelled'
        ELSE 'sent' END
$$;

-- The status a notification is accepted with, as `domain::NotificationStatus::initial`:
-- `pending` rather than `processing` while deliveries wait, as nothing has happened to
-- them yet. For the accept statement.
CREATE FUNCTION notification_initial_status(statuses text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE notification_status(statuses) WHEN 'processing' THEN 'pending' ELSE notification_status(statuses) END
$$;

-- How many deliveries the notification has, written at accept. An outcome sets the status
-- of a notification with one delivery from that delivery's new status alone; NULL (rows
-- accepted before this column) means "not known": the aggregate is read, as for several.
ALTER TABLE notifications ADD COLUMN delivery_count integer CHECK (delivery_count > 0);

-- The aggregate status of the notifications `ids`, from all their deliveries. Each
-- notification's deliveries are read by their own index lookup (the LATERAL join).
CREATE OR REPLACE FUNCTION refresh_notification_statuses(ids uuid[]) RETURNS void
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
BEGIN
    UPDATE notifications n SET status = agg.status, updated_at = now()
    FROM unnest(ids) AS i(id)
    CROSS JOIN LATERAL (
        SELECT notification_status(array_agg(d.status)) AS status
        FROM deliveries d WHERE d.notification_id = i.id HAVING count(*) > 0) agg
    WHERE n.id = i.id AND n.status IS DISTINCT FROM agg.status;
END
$$;

-- A worker's claim of a group of messages (one element of each array per message;
-- store/src/deliveries.rs, `claim_group`). Moves each delivery to `sending` for the
-- message's attempt under its claim id and lease, if the message is the one it waits for:
-- pending/queued/retrying at the attempt before, or `sending` at this attempt under the
-- same claim (a claim repeated after a lost reply) or an expired lease (its holder died).
-- A takeover logs the replaced attempt as `ambiguous` (`worker_lost`). Never claims for an
-- erased recipient. The notification is not touched: its status changes with outcomes.
--
-- Returns one row per claimed message (`claimed`, with what sending needs), then, if some
-- were not claimed, the state of their deliveries as it is after the claim (stale messages;
-- a message with no row names no delivery of its channel).
CREATE FUNCTION claim_deliveries(
    _ids uuid[], _tenant_ids uuid[], _channels text[], _attempts int[], _claims uuid[], _lease_ms bigint[],
    _erased text, _abandoned text)
RETURNS TABLE (delivery_id uuid, claim uuid, claimed boolean, status text, attempts int, recipient text,
               notification_id uuid, retry_base int, type text, content jsonb, data jsonb, priority text,
               accepted_at timestamptz, workflow text, retry jsonb)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
#variable_conflict use_column
DECLARE
    _waiting CONSTANT text[] := ARRAY['pending', 'queued', 'retrying'];
    _sending CONSTANT text := 'sending';
    _claimed bigint;
BEGIN
    RETURN QUERY
    WITH m AS (
        SELECT * FROM unnest(_ids, _tenant_ids, _channels, _attempts, _claims, _lease_ms)
             AS m(id, tenant_id, channel, attempt, claim, lease_ms)),
     held AS (
        SELECT d.id, d.tenant_id, d.attempts, d.claimed_by, d.updated_at FROM deliveries d
        WHERE d.id IN (SELECT m.id FROM m) AND d.status = _sending),
     claimed AS (
        UPDATE deliveries d SET status = _sending, attempts = m.attempt, next_attempt_at = NULL,
                                claimed_by = m.claim,
                                lease_until = now() + m.lease_ms * interval '1 millisecond',
                                updated_at = now()
        FROM m
        WHERE d.id = m.id AND d.tenant_id = m.tenant_id AND d.channel = m.channel AND d.recipient <> _erased
          AND ((d.status = ANY(_waiting) AND d.attempts = m.attempt - 1)
               OR (d.status = _sending AND d.attempts = m.attempt
                   AND (d.claimed_by = m.claim OR d.lease_until IS NULL OR d.lease_until < now())))
        RETURNING d.id, d.claimed_by, d.attempts, d.notification_id, d.recipient, d.retry_base, d.content),
     abandoned AS (
        INSERT INTO delivery_attempts (tenant_id, delivery_id, number, provider, outcome, error_code,
            error_message, latency_ms, started_at)
        SELECT h.tenant_id, h.id, h.attempts, 'unknown', 'ambiguous', 'worker_lost', _abandoned,
               (extract(epoch FROM now() - h.updated_at) * 1000)::int, h.updated_at
        FROM claimed c JOIN held h ON h.id = c.id
        WHERE h.claimed_by IS DISTINCT FROM c.claimed_by)
    SELECT c.id, c.claimed_by, true, _sending, c.attempts, c.recipient, c.notification_id, c.retry_base,
           n.type, coalesce(c.content, n.content), n.data, n.priority, n.created_at, n.workflow, n.retry
    FROM claimed c JOIN notifications n ON n.id = c.notification_id;

    GET DIAGNOSTICS _claimed = ROW_COUNT;
    IF _claimed < cardinality(_ids) THEN
        RETURN QUERY
        SELECT d.id, m.claim, false, d.status, d.attempts, d.recipient, NULL::uuid, NULL::int, NULL::text,
               NULL::jsonb, NULL::jsonb, NULL::text, NULL::timestamptz, NULL::text, NULL::jsonb
        FROM unnest(_ids, _tenant_ids, _channels, _attempts, _claims) AS m(id, tenant_id, channel, attempt, claim)
        JOIN deliveries d ON d.id = m.id AND d.tenant_id = m.tenant_id AND d.channel = m.channel
        WHERE NOT (d.status = _sending AND d.attempts = m.attempt AND d.claimed_by IS NOT DISTINCT FROM m.claim);
    END IF;
END
$$;

-- Records a group of attempt outcomes (one element of each array per outcome) and
-- returns, for each delivery the outcome applied to, its provider and message id and
-- whether receipts for that message are pending.
--
-- 1. The advisory lock of every message id recorded, in a fixed order and before any row
--    lock, as a receipt takes it (`lock_provider_message`): a receipt for one of them
--    either waits for this commit or is pending by the time step 3 reads.
-- 2. The notifications, in id order, as every writer of deliveries locks them: concurrent
--    outcomes of one notification serialize, and its aggregate sees all of them.
-- 3. The record. An outcome applies while its claim holds the delivery, or when the claim
--    was lost in a crash (the delivery is back as the claim found it, and nobody else
--    took it); otherwise only the attempt is logged. A retry for a recipient erased while
--    it was being sent is cancelled instead: nothing more goes to an erased person. A
--    notification with one delivery takes its status from that delivery's new one.
-- 4. The aggregate of each notification with several deliveries (or an unknown count).
CREATE OR REPLACE FUNCTION record_outcomes(
    _delivery_ids uuid[], _attempts int[], _statuses text[], _providers text[], _provider_message_ids text[],
    _codes text[], _messages text[], _retry_at timestamptz[], _tenant_ids uuid[], _outcomes text[],
    _excerpts text[], _latencies int[], _started_at timestamptz[], _notification_ids uuid[], _channels text[],
    _ranks smallint[], _traceparents text[], _claims uuid[], _erased text)
RETURNS TABLE (recorded_id uuid, recorded_provider text, recorded_message_id text, has_pending boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    _waiting CONSTANT text[] := ARRAY['pending', 'queued', 'retrying'];
    _sending CONSTANT text := 'sending';
    _several uuid[];
BEGIN
    PERFORM lock_provider_message(k.p, k.m)
    FROM (SELECT DISTINCT x.p, x.m FROM unnest(_providers, _provider_message_ids) AS x(p, m)
          WHERE x.m IS NOT NULL ORDER BY x.p, x.m) k;

    SELECT coalesce(array_agg(l.id) FILTER (WHERE l.delivery_count IS DISTINCT FROM 1), '{}') INTO _several
    FROM (SELECT n.id, n.delivery_count FROM notifications n WHERE n.id = ANY(_notification_ids)
          ORDER BY n.id FOR NO KEY UPDATE) l;

    RETURN QUERY
    WITH r AS (
        SELECT * FROM unnest(_delivery_ids, _attempts, _statuses, _providers, _provider_message_ids, _codes,
                             _messages, _retry_at, _tenant_ids, _outcomes, _excerpts, _latencies, _started_at,
                             _notification_ids, _channels, _ranks, _traceparents, _claims)
             AS r(delivery_id, attempt, status, provider, provider_message_id, code, message, retry_at,
                  tenant_id, outcome, excerpt, latency_ms, started_at, notification_id, channel, rank,
                  traceparent, claim)),
     updated AS (
        UPDATE deliveries d SET
            status = CASE WHEN r.status = 'retrying' AND d.recipient = _erased THEN 'cancelled' ELSE r.status END,
            attempts = r.attempt, provider = r.provider,
            provider_message_id = coalesce(r.provider_message_id, d.provider_message_id),
            last_error_code = r.code,
            last_error_message = CASE WHEN d.recipient = _erased THEN NULL ELSE r.message END,
            next_attempt_at = CASE WHEN d.recipient = _erased THEN NULL ELSE r.retry_at END,
            sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE d.sent_at END,
            claimed_by = NULL, lease_until = NULL, recoveries = 0, updated_at = now()
        FROM r
        WHERE d.id = r.delivery_id
          AND ((d.status = _sending AND d.attempts = r.attempt AND d.claimed_by = r.claim)
               OR (d.status = ANY(_waiting) AND d.attempts = r.attempt - 1))
        RETURNING d.id, d.notification_id, d.status, d.provider, d.provider_message_id),
     attempt AS (
        INSERT INTO delivery_attempts (tenant_id, delivery_id, number, provider, outcome, error_code,
            error_message, response_excerpt, latency_ms, started_at)
        SELECT r.tenant_id, r.delivery_id, r.attempt, r.provider, r.outcome, r.code, r.message, r.excerpt,
               r.latency_ms, r.started_at
        FROM r),
     retry AS (
        INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, available_at,
                            traceparent)
        SELECT r.tenant_id, r.notification_id, r.delivery_id, r.channel, r.attempt + 1, r.rank, r.retry_at,
               r.traceparent
        FROM updated u JOIN r ON r.delivery_id = u.id
        WHERE u.status = 'retrying'),
     single AS (
        UPDATE notifications n SET status = notification_status(ARRAY[u.status]), updated_at = now()
        FROM updated u
        WHERE n.id = u.notification_id AND n.delivery_count = 1
          AND n.status IS DISTINCT FROM notification_status(ARRAY[u.status]))
    SELECT u.id, u.provider, u.provider_message_id,
           u.status = 'sent' AND EXISTS (
               SELECT 1 FROM pending_receipts p
               WHERE p.provider = u.provider AND p.provider_message_id = u.provider_message_id)
    FROM updated u;

    IF cardinality(_several) > 0 THEN
        PERFORM refresh_notification_statuses(_several);
    END IF;
END
$$;

-- The relay's claim (store/src/outbox.rs): deletes up to `_limit` due rows, most urgent
-- first, skipping rows another relay holds, and returns them. Runs in the transaction that
-- spans the publish, so the delete takes effect only once the broker confirmed.
CREATE FUNCTION claim_outbox(_limit bigint)
RETURNS TABLE (tenant_id uuid, notification_id uuid, delivery_id uuid, channel text, attempt int, traceparent text)
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
    SELECT c.tenant_id, c.notification_id, c.delivery_id, c.channel, c.attempt, c.traceparent
    FROM claimed c ORDER BY c.priority DESC, c.available_at, c.id;
END
$$;

-- The relay's `queued` mark after its commit, skipping deliveries a worker holds or took
-- meanwhile (the worker moves them on).
CREATE FUNCTION mark_queued(_ids uuid[]) RETURNS void
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    _unqueued CONSTANT text[] := ARRAY['pending', 'retrying'];
BEGIN
    UPDATE deliveries d SET status = 'queued', updated_at = now()
    WHERE d.id IN (SELECT l.id FROM deliveries l WHERE l.id = ANY(_ids) AND l.status = ANY(_unqueued)
                   FOR UPDATE SKIP LOCKED);
END
$$;
