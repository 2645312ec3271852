-- Initial schema. Times are ISO-8601 UTC strings; JSON columns hold AnnealJson (snake_case) text.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    org         TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,      -- hex sha256 of the key; the key itself is never stored
    created_at  TEXT NOT NULL
);

CREATE TABLE files (
    id           TEXT PRIMARY KEY,
    org          TEXT NOT NULL,
    filename     TEXT NOT NULL,
    bytes        INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    purpose      TEXT NOT NULL,
    status       TEXT NOT NULL,            -- processing | ready | failed
    created_at   TEXT NOT NULL,
    num_examples INTEGER,
    num_tokens   INTEGER,
    errors       TEXT,                     -- JSON [ErrorItem], first 20
    total_errors INTEGER,
    UNIQUE (org, sha256)
);
CREATE INDEX files_status ON files (status);

CREATE TABLE jobs (
    id                 TEXT PRIMARY KEY,
    org                TEXT NOT NULL,
    status             TEXT NOT NULL,
    model              TEXT NOT NULL,
    mode               TEXT NOT NULL,      -- full_finetune | lora | qlora (from hyperparameters)
    training_type      TEXT NOT NULL,
    training_file_id   TEXT NOT NULL,
    validation_file_id TEXT,
    hyperparameters    TEXT NOT NULL,
    metadata           TEXT,
    suffix             TEXT,
    created_at         TEXT NOT NULL,
    queued_at          TEXT,
    started_at         TEXT,
    finished_at        TEXT,
    fine_tuned_model   TEXT,
    trained_tokens     INTEGER,
    error              TEXT,               -- JSON JobError
    progress           TEXT,               -- JSON JobProgress
    idempotency_key    TEXT,
    request_hash       TEXT,
    restarts           INTEGER NOT NULL DEFAULT 0,
    resume_from        TEXT,
    UNIQUE (org, idempotency_key)
);
CREATE INDEX jobs_org_status ON jobs (org, status);

CREATE TABLE job_events (
    job_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    type       TEXT NOT NULL,
    level      TEXT NOT NULL,
    message    TEXT NOT NULL,
    data       TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE metrics (
    job_id     TEXT NOT NULL,
    name       TEXT NOT NULL,
    step       INTEGER NOT NULL,
    value      REAL NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX metrics_job_step ON metrics (job_id, step);

CREATE TABLE checkpoints (
    id         TEXT PRIMARY KEY,               -- usable as a model id
    job_id     TEXT NOT NULL,
    org        TEXT NOT NULL,
    step       INTEGER NOT NULL,
    path       TEXT NOT NULL,
    metrics    TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX checkpoints_job ON checkpoints (job_id, step);

CREATE TABLE fine_tuned_models (
    id         TEXT PRIMARY KEY,               -- ft:/fft:/qft:<base>:<job id>
    org        TEXT NOT NULL,
    base_model TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    path       TEXT NOT NULL,                  -- a full Hugging Face folder (merged for LoRA)
    status     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX fine_tuned_models_org ON fine_tuned_models (org);
