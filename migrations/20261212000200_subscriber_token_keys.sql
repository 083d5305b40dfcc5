-- A tenant may mint subscriber tokens itself, offline: JWTs its own key signs (EdDSA,
-- Ed25519), which the API verifies with the public key the tenant registered here (the
-- `x` of its JWK, base64url). Public, so it is stored as it is.
ALTER TABLE tenants ADD COLUMN subscriber_token_key text;
