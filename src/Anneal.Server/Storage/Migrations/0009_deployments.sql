-- Deployments: a model an organisation asked to keep loaded in the inference process.
CREATE TABLE deployments (
    id         TEXT PRIMARY KEY,
    org        TEXT NOT NULL,
    model      TEXT NOT NULL,
    status     TEXT NOT NULL,      -- loading | ready | failed | stopped
    device     TEXT NOT NULL,      -- cpu | gpu
    error      TEXT,               -- the load error, for failed
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX deployments_org ON deployments (org, status);
