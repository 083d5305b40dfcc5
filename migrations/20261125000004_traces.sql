-- The W3C traceparent of the work that wrote an outbox row, carried by the relay into the
-- message's AMQP headers so one trace runs from the API request to the provider call.
ALTER TABLE outbox ADD COLUMN traceparent text;
