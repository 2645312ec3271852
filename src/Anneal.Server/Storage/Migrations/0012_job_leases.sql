-- Who runs a `running` job, until when, and which attempt it is. A server (or worker) claims a
-- queued job by setting all three in the claim's UPDATE and renews lease_until while its trainer
-- runs; a job whose lease has lapsed is recovered by any server. Every write a run makes about
-- its job is fenced by (lease_owner, attempt): a run that lost its lease writes nothing.
-- lease_until is the database clock in Unix milliseconds (SqlDialect.NowMs), never a server's.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_queue ON jobs (status, queued_at);
