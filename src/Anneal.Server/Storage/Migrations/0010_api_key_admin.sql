-- Admin keys manage their organisation's keys over the API (GET/POST/DELETE /api/keys). Keys made
-- on the server's machine (first start, `anneal keys create`) are admin keys; keys made over the API
-- are not unless asked for by an admin key.
ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 1;
