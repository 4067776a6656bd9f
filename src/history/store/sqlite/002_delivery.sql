-- crier history, schema version 2 (SQLite): what a message needs to be sent by any
-- process that picks it up, and who holds it. The same columns as PostgreSQL's 002.
ALTER TABLE messages ADD COLUMN html TEXT;    -- the HTML alternative of an email, as rendered
ALTER TABLE messages ADD COLUMN route TEXT;   -- providers still to fail over to, comma-separated
ALTER TABLE messages ADD COLUMN worker TEXT;  -- the worker holding it, or that last held it
                                              -- (PostgreSQL with several workers; NULL here)
