-- The push worker's claim and record (store/src/deliveries.rs).
--
-- 1. `claim_deliveries` also returns, for a push delivery, the device its recipient names
--    (`devices (tenant_id, subscriber_id, device_id = recipient)`): its platform, token
--    and app, read in the claim's statement, so the token sent to is the one registered
--    now (an app may have refreshed it since the accept). A device removed since the accept
--    reads as NULLs: the worker fails the delivery as `device_removed` without calling a
--    provider. The same function as in 20261206000014_generic_plans.sql but for the
--    `device_*` columns; a worker of the previous release reads its columns by name and
--    ignores them.
-- 2. `record_outcomes` with two more arrays, the device a provider reported gone and the
--    token the attempt used (NULLs for every other outcome): in the record's transaction,
--    that device is removed if it still has that token (a token registered again since
--    is kept), with a `device_removed` audit event (`reason: gone`, the provider's code).
--    The removal holds whether or not the outcome applied to the delivery: the provider
--    said that token is dead either way. The previous signature stays for the workers of
--    the previous release while a rolling upgrade replaces them.

DROP FUNCTION claim_deliveries(uuid[], uuid[], text[], int[], uuid[], bigint[], text, text);

CREATE FUNCTION claim_deliveries(
    _ids uuid[], _tenant_ids uuid[], _channels text[], _attempts int[], _claims uuid[], _lease_ms bigint[],
    _erased text, _abandoned text)
RETURNS TABLE (delivery_id uuid, claim uuid, claimed boolean, status text, attempts int, recipient text,
               notification_id uuid, retry_base int, type text, content jsonb, data jsonb, priority text,
               accepted_at timestamptz, workflow text, retry jsonb,
               device_platform text, device_token text, device_app text)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
#variable_conflict use_column
DECLARE
    _waiting CONSTANT text[] := ARRAY['pending', 'queued', 'retrying'];
    _sending CONSTANT text := 'sending';
    _push CONSTANT text := 'push';
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
        RETURNING d.id, d.claimed_by, d.attempts, d.notification_id, d.recipient, d.retry_base, d.content,
                  d.tenant_id, d.channel, d.subscriber_id),
     abandoned AS (
        INSERT INTO delivery_attempts (tenant_id, delivery_id, number, provider, outcome, error_code,
            error_message, latency_ms, started_at)
        SELECT h.tenant_id, h.id, h.attempts, 'unknown', 'ambiguous', 'worker_lost', _abandoned,
               (extract(epoch FROM now() - h.updated_at) * 1000)::int, h.updated_at
        FROM claimed c JOIN held h ON h.id = c.id
        WHERE h.claimed_by IS DISTINCT FROM c.claimed_by)
    SELECT c.id, c.claimed_by, true, _sending, c.attempts, c.recipient, c.notification_id, c.retry_base,
           n.type, coalesce(c.content, n.content), n.data, n.priority, n.created_at, n.workflow, n.retry,
           v.platform, v.token, v.app
    FROM claimed c JOIN notifications n ON n.id = c.notification_id
    -- LATERAL: the device is one probe of its primary key per claimed push delivery.
    LEFT JOIN LATERAL (
        SELECT v.platform, v.token, v.app FROM devices v
        WHERE c.channel = _push AND v.tenant_id = c.tenant_id AND v.subscriber_id = c.subscriber_id
          AND v.device_id = c.recipient
        LIMIT 1) v ON true;

    GET DIAGNOSTICS _claimed = ROW_COUNT;
    IF _claimed < cardinality(_ids) THEN
        RETURN QUERY
        SELECT d.id, m.claim, false, d.status, d.attempts, d.recipient, NULL::uuid, NULL::int, NULL::text,
               NULL::jsonb, NULL::jsonb, NULL::text, NULL::timestamptz, NULL::text, NULL::jsonb,
               NULL::text, NULL::text, NULL::text
        FROM unnest(_ids, _tenant_ids, _channels, _attempts, _claims) AS m(id, tenant_id, channel, attempt, claim)
        JOIN deliveries d ON d.id = m.id AND d.tenant_id = m.tenant_id AND d.channel = m.channel
        WHERE NOT (d.status = _sending AND d.attempts = m.attempt AND d.claimed_by IS NOT DISTINCT FROM m.claim);
    END IF;
END
$$;

CREATE FUNCTION record_outcomes(
    _delivery_ids uuid[], _attempts int[], _statuses text[], _providers text[], _provider_message_ids text[],
    _codes text[], _messages text[], _retry_delay_ms bigint[], _tenant_ids uuid[], _outcomes text[],
    _excerpts text[], _latencies int[], _started_at timestamptz[], _notification_ids uuid[], _channels text[],
    _ranks smallint[], _traceparents text[], _claims uuid[], _erased text, _integrations boolean[],
    _gone_devices text[], _gone_tokens text[])
RETURNS TABLE (recorded_id uuid, recorded_provider text, recorded_message_id text, has_pending boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    _gone record;
    _subscriber text;
    _platform text;
BEGIN
    -- The record first: its locks come in the order every writer of deliveries takes them.
    RETURN QUERY
    SELECT * FROM record_outcomes(_delivery_ids, _attempts, _statuses, _providers, _provider_message_ids, _codes,
                                  _messages, _retry_delay_ms, _tenant_ids, _outcomes, _excerpts, _latencies,
                                  _started_at, _notification_ids, _channels, _ranks, _traceparents, _claims,
                                  _erased, _integrations);

    -- Rare (a provider reported a device gone): one delete by primary key each.
    FOR _gone IN
        SELECT g.delivery_id, g.tenant_id, g.notification_id, g.device_id, g.token, g.code
        FROM unnest(_delivery_ids, _tenant_ids, _notification_ids, _gone_devices, _gone_tokens, _codes)
             AS g(delivery_id, tenant_id, notification_id, device_id, token, code)
        WHERE g.device_id IS NOT NULL
    LOOP
        SELECT d.subscriber_id INTO _subscriber FROM deliveries d WHERE d.id = _gone.delivery_id;
        DELETE FROM devices v
        WHERE v.tenant_id = _gone.tenant_id AND v.subscriber_id = _subscriber AND v.device_id = _gone.device_id
          AND v.token = _gone.token
        RETURNING v.platform INTO _platform;
        IF FOUND THEN
            INSERT INTO audit_events (tenant_id, subscriber_id, delivery_id, notification_id, action, actor, detail)
            VALUES (_gone.tenant_id, _subscriber, _gone.delivery_id, _gone.notification_id, 'device_removed', 'worker',
                    jsonb_strip_nulls(jsonb_build_object('device_id', _gone.device_id, 'platform', _platform,
                                                         'reason', 'gone', 'code', _gone.code)));
        END IF;
    END LOOP;
END
$$;
