-- Whether a validated dataset holds image parts: such a file can only train a vision model.
ALTER TABLE files ADD COLUMN has_images INTEGER;
