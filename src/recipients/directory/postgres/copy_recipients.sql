-- Inserts a batch of recipients none of which is stored yet (a fresh import), in COPY's
-- text format: one line per recipient, the columns in this order, `\N` for NULL. A
-- recipient already stored fails the whole COPY (unique violation on the primary key),
-- and the batch goes through upsert_recipients.sql instead.
COPY recipients (
    kind, id, login, status, name, email, billing_email, phone, phone_raw,
    category, location, billing_type, partner, tariffs, timezone, attrs
) FROM STDIN
