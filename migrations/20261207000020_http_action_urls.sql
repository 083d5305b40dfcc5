-- Whether a tenant's in-app action URLs may be plain http (else https, or a path on its
-- own site). Off by default: an inbox link should not be readable or changeable on the way.
ALTER TABLE tenants ADD COLUMN http_action_urls boolean NOT NULL DEFAULT false;
