-- Worker hosts (`anneal worker`) and the slots they offer, as they last said: registered when a
-- worker starts, last_seen_ms renewed by each claim and heartbeat (the database clock in Unix
-- milliseconds, SqlDialect.NowMs, as leases use). Job creation refuses a [compute] request that
-- neither the server's own runner nor a worker seen recently can meet (Workers/WorkerRegistry).
CREATE TABLE workers (
    name          TEXT PRIMARY KEY,   -- anneal worker --name (default: the host name)
    gpu_type      TEXT,               -- --gpu-type; NULL: not declared, or CPU slots
    gpus_per_slot INTEGER NOT NULL,   -- GPUs one job gets there (0: the CPU)
    slots         INTEGER NOT NULL,   -- jobs it runs at once
    registered_at TEXT NOT NULL,
    last_seen_ms  INTEGER NOT NULL
);
