-- A notification's deliveries are read a page at a time, by id (GET /v1/notifications/{id}
-- and its /deliveries listing): the index on notification_id alone made each page sort
-- every delivery of a large fan-out. Each page also reads its deliveries' own audit events.
CREATE INDEX deliveries_notification_page ON deliveries (notification_id, id);
DROP INDEX deliveries_notification;
CREATE INDEX audit_events_delivery ON audit_events (delivery_id, id) WHERE delivery_id IS NOT NULL;
