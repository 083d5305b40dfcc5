-- Outbound event webhooks (docs/webhooks.md): a tenant's endpoints, the events that
-- happened to its notifications, and one message per event and endpoint to send.
--
-- Events are written by triggers, in the transaction of the state change they report, so
-- every writer is covered (an outcome, a receipt, a cancel, the sweeper, an inbox read)
-- and a change rolled back leaves no event. A tenant without endpoints pays one index
-- probe per reported change; nothing is written for it.

CREATE TABLE webhook_endpoints (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url               text NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    description       text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    -- Event types this endpoint receives; '{*}' for all of them.
    events            text[] NOT NULL CHECK (cardinality(events) > 0),
    -- Notification types it receives events of; NULL for all.
    types             text[],
    enabled           boolean NOT NULL DEFAULT true,
    -- Why it is disabled when it was not the tenant: `gone` (it answered 410) or `failing`
    -- (every attempt failed for `webhooks.disable_after`).
    disabled_reason   text CHECK (disabled_reason IN ('gone', 'failing')),
    -- Whether events carry the recipient's address.
    include_addresses boolean NOT NULL DEFAULT false,
    -- The signing secret (`whsec_…`), sealed (bootstrap/src/seal.rs, the tenant and
    -- `webhook:<id>` bound in); after a rotation the one before it keeps signing beside it
    -- until `previous_until`.
    secret            text NOT NULL,
    previous_secret   text,
    previous_until    timestamptz,
    -- Since when every attempt has failed; NULL after a success.
    failing_since     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((previous_secret IS NULL) = (previous_until IS NULL))
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at, id);

-- Grows with every event: of two events about one notification or one delivery, the
-- later change has the larger number (each is drawn while the changed row is locked).
CREATE SEQUENCE webhook_event_sequence;

-- What happened, kept `webhooks.retention` (14 days) for replay; written only when one of
-- the tenant's endpoints, enabled or not, takes the event. `id` is the `webhook-id` of
-- every message of the event, retries and replays included. `payload` is the body sent
-- (`{"type", "timestamp", "data"}`), without addresses: an endpoint that includes them
-- gets the delivery's `recipient` added when the message is sent.
CREATE TABLE webhook_events (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    type             text NOT NULL,
    notification_type text,
    notification_id  uuid,
    delivery_id      uuid,
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_tenant_created ON webhook_events (tenant_id, created_at, id);
CREATE INDEX webhook_events_created ON webhook_events (created_at);

-- One event to one endpoint: sent with the claim, lease, retry and attempts log of a
-- delivery.
CREATE TABLE webhook_messages (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         uuid NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sending', 'retrying', 'sent', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    claimed_by       uuid,
    lease_until      timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_messages_endpoint ON webhook_messages (endpoint_id, created_at, id);
CREATE INDEX webhook_messages_event ON webhook_messages (event_id);
CREATE INDEX webhook_messages_unsettled ON webhook_messages (updated_at)
    WHERE status IN ('pending', 'sending', 'retrying');

CREATE TABLE webhook_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    message_id      uuid NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    number          integer NOT NULL,
    -- NULL when no answer came (refused address, connection error, timeout).
    status_code     integer,
    outcome         text NOT NULL CHECK (outcome IN ('sent', 'retryable', 'permanent', 'gone', 'refused')),
    error           text,
    response_excerpt text,
    latency_ms      integer NOT NULL,
    next_attempt_at timestamptz,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id DESC);
CREATE INDEX webhook_attempts_message ON webhook_attempts (message_id, id);

-- ISO 8601 in UTC with milliseconds, as every timestamp of an event.
CREATE FUNCTION webhook_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- Records one event for the tenant if an endpoint takes it, and a message for each
-- enabled endpoint that does, with the outbox row (route `webhooks`: its `delivery_id`
-- and `notification_id` hold the message's id) that the relay publishes to
-- `notify.webhooks`. No NOTIFY here: it would make these transactions commit one at a
-- time (store/src/wake.rs); the relays find the rows on their next turn, at the latest
-- after `relay.poll_interval`. `data` gets `sequence`; the payload gets `type` and
-- `timestamp` (the database's clock).
CREATE FUNCTION record_webhook_event(_tenant_id uuid, _type text, _notification_type text,
                                     _notification_id uuid, _delivery_id uuid, _data jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    _event uuid;
    _now timestamptz := now();
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM webhook_endpoints e
        WHERE e.tenant_id = _tenant_id
          AND (e.events @> ARRAY[_type] OR e.events @> ARRAY['*'])
          AND (e.types IS NULL OR _notification_type = ANY (e.types))) THEN
        RETURN;
    END IF;
    _event := gen_random_uuid();
    INSERT INTO webhook_events (id, tenant_id, type, notification_type, notification_id, delivery_id, payload,
                                created_at)
    VALUES (_event, _tenant_id, _type, _notification_type, _notification_id, _delivery_id,
            jsonb_build_object(
                'type', _type,
                'timestamp', webhook_time(_now),
                'data', _data || jsonb_build_object('sequence', nextval('webhook_event_sequence'))),
            _now);
    WITH m AS (
        INSERT INTO webhook_messages (id, tenant_id, endpoint_id, event_id, created_at, updated_at)
        SELECT gen_random_uuid(), _tenant_id, e.id, _event, _now, _now
        FROM webhook_endpoints e
        WHERE e.tenant_id = _tenant_id AND e.enabled
          AND (e.events @> ARRAY[_type] OR e.events @> ARRAY['*'])
          AND (e.types IS NULL OR _notification_type = ANY (e.types))
        RETURNING id)
    INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority)
    SELECT _tenant_id, m.id, m.id, 'webhooks', 1, 1 FROM m;
END
$$;

-- delivery.sent, .delivered, .bounced, .failed (failed and undelivered), .suppressed and
-- .retrying, when a delivery is written with that status or moves to it.
CREATE FUNCTION delivery_webhook_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    _type text := 'delivery.' || CASE NEW.status WHEN 'undelivered' THEN 'failed' ELSE NEW.status END;
    _n notifications%ROWTYPE;
BEGIN
    -- The cheap test first: most tenants have no endpoint.
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = NEW.tenant_id) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO _n FROM notifications n WHERE n.id = NEW.notification_id;
    PERFORM record_webhook_event(NEW.tenant_id, _type, _n.type, NEW.notification_id, NEW.id,
        jsonb_build_object(
            'notification_id', NEW.notification_id,
            'delivery_id', NEW.id,
            'notification_type', _n.type,
            'correlation_id', _n.correlation_id,
            'channel', NEW.channel,
            'status', NEW.status,
            'attempts', NEW.attempts,
            'provider', NEW.provider,
            'provider_message_id', NEW.provider_message_id,
            'error_code', NEW.last_error_code,
            'next_attempt_at', webhook_time(NEW.next_attempt_at),
            'subscriber_id', NEW.subscriber_id,
            'updated_at', webhook_time(NEW.updated_at),
            'notification_updated_at', webhook_time(_n.updated_at)));
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_webhook_insert AFTER INSERT ON deliveries
    FOR EACH ROW WHEN (NEW.status IN ('suppressed', 'delivered'))
    EXECUTE FUNCTION delivery_webhook_event();
CREATE TRIGGER deliveries_webhook_update AFTER UPDATE OF status ON deliveries
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status
                       AND NEW.status IN ('sent', 'delivered', 'bounced', 'failed', 'undelivered',
                                          'suppressed', 'retrying'))
    EXECUTE FUNCTION delivery_webhook_event();

-- notification.accepted when a notification is written; notification.completed when its
-- aggregate becomes (or is written) sent, partial, failed or cancelled, with the count of
-- its deliveries per channel and status.
CREATE FUNCTION notification_webhook_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    _data jsonb;
    _completed boolean := NEW.status IN ('sent', 'partial', 'failed', 'cancelled')
                          AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = NEW.tenant_id) THEN
        RETURN NULL;
    END IF;
    _data := jsonb_build_object(
        'notification_id', NEW.id,
        'notification_type', NEW.type,
        'correlation_id', NEW.correlation_id,
        'status', NEW.status,
        'priority', NEW.priority,
        'updated_at', webhook_time(NEW.updated_at));
    IF TG_OP = 'INSERT' THEN
        PERFORM record_webhook_event(NEW.tenant_id, 'notification.accepted', NEW.type, NEW.id, NULL,
                                     _data || jsonb_build_object('deliveries', NEW.delivery_count));
    END IF;
    IF _completed THEN
        PERFORM record_webhook_event(NEW.tenant_id, 'notification.completed', NEW.type, NEW.id, NULL,
            _data || jsonb_build_object('channels', (
                SELECT coalesce(jsonb_object_agg(c.channel, c.statuses), '{}')
                FROM (SELECT s.channel, jsonb_object_agg(s.status, s.n) AS statuses
                      FROM (SELECT d.channel, d.status, count(*) AS n FROM deliveries d
                            WHERE d.notification_id = NEW.id GROUP BY d.channel, d.status) s
                      GROUP BY s.channel) c)));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER notifications_webhook_insert AFTER INSERT ON notifications
    FOR EACH ROW EXECUTE FUNCTION notification_webhook_event();
CREATE TRIGGER notifications_webhook_update AFTER UPDATE OF status ON notifications
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status
                       AND NEW.status IN ('sent', 'partial', 'failed', 'cancelled'))
    EXECUTE FUNCTION notification_webhook_event();

-- inbox.read when an inbox item is first read.
CREATE FUNCTION inbox_webhook_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = NEW.tenant_id) THEN
        RETURN NULL;
    END IF;
    PERFORM record_webhook_event(NEW.tenant_id, 'inbox.read', NEW.type, NEW.notification_id, NULL,
        jsonb_build_object(
            'notification_id', NEW.notification_id,
            'inbox_item_id', NEW.id,
            'notification_type', NEW.type,
            'subscriber_id', NEW.subscriber_id,
            'read_at', webhook_time(NEW.read_at)));
    RETURN NULL;
END
$$;

CREATE TRIGGER inbox_items_webhook_read AFTER UPDATE OF read_at ON inbox_items
    FOR EACH ROW WHEN (OLD.read_at IS NULL AND NEW.read_at IS NOT NULL)
    EXECUTE FUNCTION inbox_webhook_event();
