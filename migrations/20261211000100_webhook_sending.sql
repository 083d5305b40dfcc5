-- Sending webhook messages (docs/webhooks.md): the webhook-worker claims a message under a
-- lease, posts it, and records the attempt with the message's new state in one statement
-- each, as a channel worker does with a delivery. The endpoint's health moves with its
-- attempts: a success ends a failure streak, a 410 disables it, and a streak longer than
-- `webhooks.disable_after` disables it too, with an audit event.

-- An endpoint disabled by the worker is audited; such an event belongs to no
-- notification and names the endpoint in `detail`.
ALTER TABLE audit_events
    DROP CONSTRAINT audit_events_action_check,
    ADD CONSTRAINT audit_events_action_check
        CHECK (action IN ('accepted', 'cancelled', 'retried', 'subscriber_erased', 'recovered', 'device_removed',
                          'webhook_disabled'));

-- Claims message `_id` for attempt `_attempt` under claim `_claim` for `_lease_ms`:
-- - `claimed`, with what the post needs: the endpoint, its sealed secrets and the body
--   (the event's payload, with the delivery's address when the endpoint includes
--   addresses; never a chat address, which is a credential);
-- - `stale`: final already, claimed by a live lease, or another attempt's message;
-- - `disabled`: its endpoint is disabled, so the message is cancelled (the event stays
--   for a replay);
-- - `unknown`: no such message (deleted with its endpoint or aged out).
-- The same claim may claim again (a retry after a lost reply), and a lease that ran out
-- may be taken over: the attempt that held it died.
CREATE FUNCTION claim_webhook_message(_id uuid, _attempt integer, _claim uuid, _lease_ms bigint)
RETURNS TABLE (state text, endpoint_id uuid, url text, secret text, previous_secret text,
               previous_until timestamptz, event_id uuid, body text, accepted_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    _m webhook_messages%ROWTYPE;
    _e webhook_endpoints%ROWTYPE;
BEGIN
    SELECT * INTO _m FROM webhook_messages m WHERE m.id = _id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown', NULL::uuid, NULL, NULL, NULL, NULL::timestamptz, NULL::uuid, NULL,
                            NULL::timestamptz;
        RETURN;
    END IF;
    IF _m.attempts <> _attempt - 1
       OR NOT (_m.status IN ('pending', 'retrying')
               OR (_m.status = 'sending' AND (_m.lease_until < now() OR _m.claimed_by = _claim))) THEN
        RETURN QUERY SELECT 'stale', _m.endpoint_id, NULL, NULL, NULL, NULL::timestamptz, _m.event_id, NULL,
                            _m.created_at;
        RETURN;
    END IF;
    SELECT * INTO _e FROM webhook_endpoints e WHERE e.id = _m.endpoint_id;
    IF NOT _e.enabled THEN
        UPDATE webhook_messages m SET status = 'cancelled', claimed_by = NULL, lease_until = NULL,
            next_attempt_at = NULL, last_error = 'endpoint disabled', updated_at = now()
        WHERE m.id = _id;
        RETURN QUERY SELECT 'disabled', _m.endpoint_id, NULL, NULL, NULL, NULL::timestamptz, _m.event_id, NULL,
                            _m.created_at;
        RETURN;
    END IF;
    UPDATE webhook_messages m SET status = 'sending', claimed_by = _claim,
        lease_until = now() + _lease_ms * interval '1 millisecond', updated_at = now()
    WHERE m.id = _id;
    RETURN QUERY
        SELECT 'claimed', _e.id, _e.url, _e.secret, _e.previous_secret, _e.previous_until, ev.id,
               (CASE WHEN _e.include_addresses AND d.recipient IS NOT NULL AND d.channel <> 'chat'
                     THEN jsonb_set(ev.payload, '{data,recipient}', to_jsonb(d.recipient))
                     ELSE ev.payload END)::text,
               _m.created_at
        FROM webhook_events ev LEFT JOIN deliveries d ON d.id = ev.delivery_id
        WHERE ev.id = _m.event_id;
END
$$;

-- Disables endpoint `_endpoint` for `_reason` (`gone`, `failing`) unless it is disabled
-- already, with an audit event; true when it did.
CREATE FUNCTION disable_webhook_endpoint(_endpoint uuid, _reason text, _detail jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    _tenant uuid;
BEGIN
    UPDATE webhook_endpoints e SET enabled = false, disabled_reason = _reason, updated_at = now()
    WHERE e.id = _endpoint AND e.enabled
    RETURNING e.tenant_id INTO _tenant;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO audit_events (tenant_id, action, actor, detail)
    VALUES (_tenant, 'webhook_disabled', 'webhook-worker',
            jsonb_build_object('endpoint_id', _endpoint, 'reason', _reason) || _detail);
    RETURN true;
END
$$;

-- Records attempt `_number` of message `_id` and, while claim `_claim` still holds the
-- message, its new state: `sent`; `retrying` when `_retry_in_ms` is given (its outbox row
-- for the next attempt, due then); else `failed`. Answers the message's new state, or
-- `taken` when the claim no longer held it (the attempt is logged all the same).
-- `_outcome` is the attempt's: `sent`, `retryable`, `gone` (a 410: the endpoint is
-- disabled) or `refused` (an internal address). An endpoint's failure streak starts at
-- its first failed attempt and ends at a success; one longer than `_disable_after_ms`
-- disables the endpoint.
CREATE FUNCTION record_webhook_attempt(_id uuid, _claim uuid, _number integer, _status_code integer,
                                       _outcome text, _error text, _excerpt text, _latency_ms integer,
                                       _started_at timestamptz, _retry_in_ms bigint, _disable_after_ms bigint)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    _m webhook_messages%ROWTYPE;
    _next timestamptz := now() + _retry_in_ms * interval '1 millisecond';
    _state text;
    _failing_since timestamptz;
BEGIN
    SELECT * INTO _m FROM webhook_messages m WHERE m.id = _id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'taken';
    END IF;
    _state := CASE WHEN _outcome = 'sent' THEN 'sent' WHEN _retry_in_ms IS NOT NULL THEN 'retrying'
                   ELSE 'failed' END;
    INSERT INTO webhook_attempts (tenant_id, endpoint_id, message_id, number, status_code, outcome, error,
                                  response_excerpt, latency_ms, next_attempt_at, started_at)
    VALUES (_m.tenant_id, _m.endpoint_id, _id, _number, _status_code, _outcome, _error, _excerpt, _latency_ms,
            CASE WHEN _state = 'retrying' THEN _next END, _started_at);

    IF _outcome = 'sent' THEN
        UPDATE webhook_endpoints e SET failing_since = NULL WHERE e.id = _m.endpoint_id AND e.failing_since IS NOT NULL;
    ELSIF _outcome = 'gone' THEN
        PERFORM disable_webhook_endpoint(_m.endpoint_id, 'gone', jsonb_build_object('status_code', _status_code));
    ELSE
        UPDATE webhook_endpoints e SET failing_since = coalesce(e.failing_since, now())
        WHERE e.id = _m.endpoint_id
        RETURNING e.failing_since INTO _failing_since;
        IF _failing_since < now() - _disable_after_ms * interval '1 millisecond' THEN
            PERFORM disable_webhook_endpoint(_m.endpoint_id, 'failing',
                                             jsonb_build_object('failing_since', webhook_time(_failing_since)));
        END IF;
    END IF;

    IF NOT (_m.status = 'sending' AND _m.claimed_by = _claim) THEN
        RETURN 'taken';
    END IF;
    UPDATE webhook_messages m SET status = _state, attempts = _number, claimed_by = NULL, lease_until = NULL,
        next_attempt_at = CASE WHEN _state = 'retrying' THEN _next END,
        last_status_code = _status_code, last_error = _error, updated_at = now()
    WHERE m.id = _id;
    IF _state = 'retrying' THEN
        INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, available_at)
        VALUES (_m.tenant_id, _id, _id, 'webhooks', _number + 1, 1, _next);
    END IF;
    RETURN _state;
END
$$;

-- Gives back message `_id`, claimed by `_claim` for attempt `_attempt`, without an
-- attempt: its endpoint had as many messages in flight as it may, or used up its rate.
-- Its outbox row asks for the same attempt after `_delay_ms`; false when the claim no
-- longer held it.
CREATE FUNCTION defer_webhook_message(_id uuid, _claim uuid, _attempt integer, _delay_ms bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    _tenant uuid;
BEGIN
    UPDATE webhook_messages m
    SET status = CASE WHEN m.attempts = 0 THEN 'pending' ELSE 'retrying' END, claimed_by = NULL,
        lease_until = NULL, next_attempt_at = now() + _delay_ms * interval '1 millisecond', updated_at = now()
    WHERE m.id = _id AND m.status = 'sending' AND m.claimed_by = _claim
    RETURNING m.tenant_id INTO _tenant;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, available_at)
    VALUES (_tenant, _id, _id, 'webhooks', _attempt, 1, now() + _delay_ms * interval '1 millisecond');
    RETURN true;
END
$$;

