-- The job's normalised settings (Anneal.Core.Training.JobSettings as JSON), produced once at job
-- creation from whichever spellings the request used; the runner reads them as stored. NULL for
-- jobs created before this column existed (the runner then normalises the stored request).
ALTER TABLE jobs ADD COLUMN settings TEXT;
-- The optimizer step whose weights are the job's result (the last, or the best evaluated one).
ALTER TABLE jobs ADD COLUMN weights_step INTEGER;
