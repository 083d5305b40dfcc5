-- What a notification reports, when it reports an error (seed 000's `notify(message,
-- severity)`): how bad, the producer's code for it, and its class. Stored and shown, and
-- filterable in the list (`GET /v1/notifications?severity=&error_code=&error_class=`).
ALTER TABLE notifications
    ADD COLUMN severity text CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    ADD COLUMN error_code text,
    ADD COLUMN error_class text;

-- A type may say who its notifications are for (`customer` or `support`: the tenant's
-- topics of those names) and the class of error it reports. A notification that names no
-- recipients goes to the audience its error class is classified with, else to its type's.
ALTER TABLE notification_types
    ADD COLUMN audience text CHECK (audience IN ('customer', 'support')),
    ADD COLUMN error_class text;

-- The tenant's classification table (`PUT /v1/classifications`): an error class's
-- audience, and the priority of its notifications that name none.
CREATE TABLE classifications (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    error_class text NOT NULL,
    audience    text NOT NULL CHECK (audience IN ('customer', 'support')),
    priority    text CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    PRIMARY KEY (tenant_id, error_class)
);
