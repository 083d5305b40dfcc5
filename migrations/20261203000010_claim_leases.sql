-- A worker's claim on a delivery it is sending: which claim holds it (an id the worker
-- draws per message) and until when. Another message may take a `sending` delivery over
-- only once its lease has run out, and a claim repeated after a lost reply finds its own.
ALTER TABLE deliveries
    ADD COLUMN claimed_by uuid,
    ADD COLUMN lease_until timestamptz,
    -- Times the sweeper queued the delivery again without an outcome in between; past a
    -- bound it is failed (`stranded`) rather than sent round for ever.
    ADD COLUMN recoveries integer NOT NULL DEFAULT 0;

-- The sweeper's scan: deliveries not yet final, oldest change first. Small, as only the
-- unsettled deliveries are in it.
CREATE INDEX deliveries_unsettled ON deliveries (updated_at)
    WHERE status IN ('pending', 'queued', 'sending', 'retrying');

-- Whether a delivery still has an outbox row (the sweeper, and retries by hand).
CREATE INDEX outbox_delivery ON outbox (delivery_id);

ALTER TABLE audit_events
    DROP CONSTRAINT audit_events_action_check,
    ADD CONSTRAINT audit_events_action_check
        CHECK (action IN ('accepted', 'cancelled', 'retried', 'subscriber_erased', 'recovered'));
