-- Which integration sent an attempt: `provider` stays the unit's name (receipts match on
-- it), and `integration` says whether it was the tenant's own integration of that name
-- (true) or the operator's configured provider (false, as every attempt before this).
--
-- The same function as in 20261207000001_retry_by_database_clock.sql but for the last
-- argument, `_integrations`. The previous signature is left in place for the workers of
-- the previous release while a rolling upgrade replaces them (their attempts say false).

ALTER TABLE delivery_attempts ADD COLUMN integration boolean NOT NULL DEFAULT false;

CREATE FUNCTION record_outcomes(
    _delivery_ids uuid[], _attempts int[], _statuses text[], _providers text[], _provider_message_ids text[],
    _codes text[], _messages text[], _retry_delay_ms bigint[], _tenant_ids uuid[], _outcomes text[],
    _excerpts text[], _latencies int[], _started_at timestamptz[], _notification_ids uuid[], _channels text[],
    _ranks smallint[], _traceparents text[], _claims uuid[], _erased text, _integrations boolean[])
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
                             _messages, _retry_delay_ms, _tenant_ids, _outcomes, _excerpts, _latencies, _started_at,
                             _notification_ids, _channels, _ranks, _traceparents, _claims, _integrations)
             AS r(delivery_id, attempt, status, provider, provider_message_id, code, message, retry_delay_ms,
                  tenant_id, outcome, excerpt, latency_ms, started_at, notification_id, channel, rank,
                  traceparent, claim, integration)),
     updated AS (
        UPDATE deliveries d SET
            status = CASE WHEN r.status = 'retrying' AND d.recipient = _erased THEN 'cancelled' ELSE r.status END,
            attempts = r.attempt, provider = r.provider,
            provider_message_id = coalesce(r.provider_message_id, d.provider_message_id),
            last_error_code = r.code,
            last_error_message = CASE WHEN d.recipient = _erased THEN NULL ELSE r.message END,
            next_attempt_at = CASE WHEN d.recipient = _erased THEN NULL
                                   ELSE now() + r.retry_delay_ms * interval '1 millisecond' END,
            sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE d.sent_at END,
            claimed_by = NULL, lease_until = NULL, recoveries = 0, updated_at = now()
        FROM r
        WHERE d.id = r.delivery_id
          AND ((d.status = _sending AND d.attempts = r.attempt AND d.claimed_by = r.claim)
               OR (d.status = ANY(_waiting) AND d.attempts = r.attempt - 1))
        RETURNING d.id, d.notification_id, d.status, d.provider, d.provider_message_id),
     attempt AS (
        INSERT INTO delivery_attempts (tenant_id, delivery_id, number, provider, outcome, error_code,
            error_message, response_excerpt, latency_ms, started_at, integration)
        SELECT r.tenant_id, r.delivery_id, r.attempt, r.provider, r.outcome, r.code, r.message, r.excerpt,
               r.latency_ms, r.started_at, r.integration
        FROM r),
     retry AS (
        INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, available_at,
                            traceparent)
        SELECT r.tenant_id, r.notification_id, r.delivery_id, r.channel, r.attempt + 1, r.rank,
               now() + r.retry_delay_ms * interval '1 millisecond',
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
