-- Job labels (an object of strings), picked by selectors.
ALTER TABLE jobs ADD COLUMN labels JSONB NOT NULL DEFAULT '{}'::jsonb;
