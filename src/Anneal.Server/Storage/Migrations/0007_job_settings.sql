-- The job's normalised settings (Anneal.Core.Training.JobSettings as JSON), produced once at job
-- creation from whichever spellings the request used; the runner reads them as stored. NULL for
-- jobs created before this column existed (the runner then normalises the stored request).
ALTER TABLE jobs ADD COLUMN settings TEXT;
