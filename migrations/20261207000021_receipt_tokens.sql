-- Callbacks already taken, by the id their provider gives each one (Twilio's
-- I-Twilio-Idempotency-Token, SNS's MessageId): a provider retrying one is acknowledged
-- without applying it again. Kept for a bounded time (the API's purge), like
-- pending_receipts.
CREATE TABLE receipt_tokens (
    provider text NOT NULL,
    token text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, token)
);
CREATE INDEX receipt_tokens_seen_at ON receipt_tokens (seen_at);
