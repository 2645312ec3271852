-- The trainer process of a running job, so a restarted server can stop a trainer orphaned by a crash.
ALTER TABLE jobs ADD COLUMN trainer_pid INTEGER;
