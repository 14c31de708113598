-- Job labels (a JSON object of strings), picked by selectors.
ALTER TABLE jobs ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
