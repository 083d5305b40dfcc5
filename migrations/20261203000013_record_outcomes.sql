-- A worker's outcome record in one round trip (store/src/deliveries.rs, `record_group`):
-- the locks, the record and the aggregate refresh must be separate statements (each reads
-- what the one before waited for), and a function runs them as one call, committed on its
-- own, instead of BEGIN, three statements and COMMIT from the client.

-- The aggregate status of the notifications `ids` from their deliveries (docs/contract.md §4):
-- `processing` while any is in flight; then `sent` if some succeeded and none failed,
-- `partial` if both, `failed` if only failures, `cancelled` if all were cancelled.
-- Suppressed deliveries count for nothing, so a notification whose deliveries were all
-- suppressed is `sent`. Each notification's deliveries are read by their own index lookup
-- (the LATERAL join): without statistics on `notification_id`, the planner takes
-- `= ANY(ids)` to match a large share of the table and scans all of it.
CREATE FUNCTION refresh_notification_statuses(ids uuid[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE notifications n SET status = agg.status, updated_at = now()
    FROM unnest(ids) AS i(id)
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN bool_or(d.status IN ('pending', 'queued', 'sending', 'retrying')) THEN 'processing'
            WHEN bool_or(d.status IN ('sent', 'delivered')) AND bool_or(d.status IN ('failed', 'bounced', 'undelivered'))
                THEN 'partial'
            WHEN bool_or(d.status IN ('sent', 'delivered')) THEN 'sent'
            WHEN bool_or(d.status IN ('failed', 'bounced', 'undelivered')) THEN 'failed'
            WHEN bool_or(d.status = 'cancelled') THEN 'cancelled'
            ELSE 'sent' END AS status
        FROM deliveries d WHERE d.notification_id = i.id HAVING count(*) > 0) agg
    WHERE n.id = i.id AND n.status IS DISTINCT FROM agg.status
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
--    it was being sent is cancelled instead: nothing more goes to an erased person.
-- 4. The aggregate of each notification.
CREATE FUNCTION record_outcomes(
    _delivery_ids uuid[], _attempts int[], _statuses text[], _providers text[], _provider_message_ids text[],
    _codes text[], _messages text[], _retry_at timestamptz[], _tenant_ids uuid[], _outcomes text[],
    _excerpts text[], _latencies int[], _started_at timestamptz[], _notification_ids uuid[], _channels text[],
    _ranks smallint[], _traceparents text[], _claims uuid[], _erased text)
RETURNS TABLE (recorded_id uuid, recorded_provider text, recorded_message_id text, has_pending boolean)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lock_provider_message(k.p, k.m)
    FROM (SELECT DISTINCT x.p, x.m FROM unnest(_providers, _provider_message_ids) AS x(p, m)
          WHERE x.m IS NOT NULL ORDER BY x.p, x.m) k;

    PERFORM 1 FROM notifications n WHERE n.id = ANY(_notification_ids) ORDER BY n.id FOR NO KEY UPDATE;

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
          AND ((d.status = 'sending' AND d.attempts = r.attempt AND d.claimed_by = r.claim)
               OR (d.status IN ('pending', 'queued', 'retrying') AND d.attempts = r.attempt - 1))
        RETURNING d.id, d.status, d.provider, d.provider_message_id),
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
        WHERE u.status = 'retrying')
    SELECT u.id, u.provider, u.provider_message_id,
           u.status = 'sent' AND EXISTS (
               SELECT 1 FROM pending_receipts p
               WHERE p.provider = u.provider AND p.provider_message_id = u.provider_message_id)
    FROM updated u;

    PERFORM refresh_notification_statuses(_notification_ids);
END
$$;
