-- The outbox is a queue: each row is inserted, claimed and deleted within seconds, so its
-- dead rows pile up long before the default autovacuum threshold (20 % of the table)
-- notices them, and the relay's claim wades through their index entries. Vacuum it after
-- every 1,000 dead rows, without cost-based pauses. (Where autovacuum is off, as on the
-- benchmark's machine, this changes nothing.)
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
