-- Who gets what (docs/contract.md §2, §3, §4): subscribers, topics, notification types, templates,
-- preferences; the rendered content of each delivery; erasure on request.

-- A tenant's fallback locale for templates, and whether a notification may name a type
-- the tenant has not defined (it then needs inline content).
ALTER TABLE tenants
    ADD COLUMN default_locale text NOT NULL DEFAULT 'en' CHECK (length(default_locale) BETWEEN 2 AND 35),
    ADD COLUMN adhoc_types boolean NOT NULL DEFAULT true;

-- The people a tenant notifies, by the tenant's own id for them. `preferences` holds their
-- opt-outs and quiet hours as one document: it is read with the subscriber at accept time
-- and written whole by `PUT /v1/subscribers/{id}/preferences`.
CREATE TABLE subscribers (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           text NOT NULL CHECK (length(id) BETWEEN 1 AND 200),
    email        text,
    phone        text,
    whatsapp     text,
    locale       text,
    timezone     text,
    data         jsonb NOT NULL DEFAULT '{}',
    preferences  jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- A topic exists while it has members; fan-out reads a topic's members by the primary key.
CREATE TABLE topic_members (
    tenant_id      uuid NOT NULL,
    topic          text NOT NULL CHECK (length(topic) BETWEEN 1 AND 200),
    subscriber_id  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, topic, subscriber_id),
    FOREIGN KEY (tenant_id, subscriber_id) REFERENCES subscribers (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX topic_members_subscriber ON topic_members (tenant_id, subscriber_id);

-- What a notification of a type does by default. `retry` overrides the channel's retry
-- policy; `preferences` holds the tenant's default per channel for this type (a
-- subscriber's own choice wins), e.g. {"sms": false} makes SMS opt-in.
CREATE TABLE notification_types (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    key            text NOT NULL,
    channels       text[] NOT NULL,
    critical       boolean NOT NULL DEFAULT false,
    novu_workflow  text,
    retry          jsonb,
    category       text,
    preferences    jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- Template sources per type, channel and locale: `content` holds the minijinja sources of
-- the channel's fields (subject/text/html, text, title/body/action_url). They compiled
-- when they were stored.
CREATE TABLE templates (
    tenant_id   uuid NOT NULL,
    type        text NOT NULL,
    channel     text NOT NULL,
    locale      text NOT NULL,
    content     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, type, channel, locale),
    FOREIGN KEY (tenant_id, type) REFERENCES notification_types (tenant_id, key) ON DELETE CASCADE
);

-- The subscriber a delivery went to (erasure finds its deliveries by it), the exact content
-- rendered for it (NULL: the notification's inline content) and the template locale used.
ALTER TABLE deliveries
    ADD COLUMN subscriber_id text,
    ADD COLUMN content jsonb,
    ADD COLUMN locale text;
CREATE INDEX deliveries_subscriber ON deliveries (tenant_id, subscriber_id) WHERE subscriber_id IS NOT NULL;

-- What the type said at accept time: Novu's workflow key (NULL: the type's key) and the
-- retry policy override (NULL: the channel's).
ALTER TABLE notifications
    ADD COLUMN workflow text,
    ADD COLUMN retry jsonb;

-- Erasing a subscriber is audited; such an event belongs to no notification.
ALTER TABLE audit_events
    ALTER COLUMN notification_id DROP NOT NULL,
    ADD COLUMN subscriber_id text,
    DROP CONSTRAINT audit_events_action_check,
    ADD CONSTRAINT audit_events_action_check
        CHECK (action IN ('accepted', 'cancelled', 'retried', 'subscriber_erased'));
CREATE INDEX audit_events_subscriber ON audit_events (tenant_id, subscriber_id) WHERE subscriber_id IS NOT NULL;
