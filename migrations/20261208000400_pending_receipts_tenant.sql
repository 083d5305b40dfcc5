-- The tenant a pending receipt is scoped to: a receipt that came in on a tenant's own
-- receipt route (signed with that tenant's integration secret) may only ever move that
-- tenant's deliveries, also when it is applied later, by the outcome that records its
-- message. NULL: a receipt of the operator's provider account, which names any tenant's.
ALTER TABLE pending_receipts ADD COLUMN tenant_id uuid;
