-- Inserts or updates a batch of recipients in one statement; each $n is an array with
-- one element per recipient (no (kind, id) twice). Rows whose every column equals the
-- stored row are left alone and not returned, so the returned rows say which were
-- inserted (`inserted`, xmax = 0) and which updated; the rest were unchanged.
INSERT INTO recipients AS r (
    kind, id, login, status, name, email, billing_email, phone, phone_raw,
    category, location, billing_type, partner, tariffs, timezone, attrs
)
SELECT kind, id, login, status, name, email, billing_email, phone, phone_raw,
       category, location, billing_type, partner, tariffs::jsonb, timezone, attrs::jsonb
FROM unnest(
    $1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
    $14::text[], $15::text[], $16::text[]
) AS t(
    kind, id, login, status, name, email, billing_email, phone, phone_raw,
    category, location, billing_type, partner, tariffs, timezone, attrs
)
ON CONFLICT (kind, id) DO UPDATE SET
    login = EXCLUDED.login,
    status = EXCLUDED.status,
    name = EXCLUDED.name,
    email = EXCLUDED.email,
    billing_email = EXCLUDED.billing_email,
    phone = EXCLUDED.phone,
    phone_raw = EXCLUDED.phone_raw,
    category = EXCLUDED.category,
    location = EXCLUDED.location,
    billing_type = EXCLUDED.billing_type,
    partner = EXCLUDED.partner,
    tariffs = EXCLUDED.tariffs,
    timezone = EXCLUDED.timezone,
    attrs = EXCLUDED.attrs
WHERE (r.login, r.status, r.name, r.email, r.billing_email, r.phone, r.phone_raw,
       r.category, r.location, r.billing_type, r.partner, r.tariffs, r.timezone, r.attrs)
      IS DISTINCT FROM
      (EXCLUDED.login, EXCLUDED.status, EXCLUDED.name, EXCLUDED.email,
       EXCLUDED.billing_email, EXCLUDED.phone, EXCLUDED.phone_raw, EXCLUDED.category,
       EXCLUDED.location, EXCLUDED.billing_type, EXCLUDED.partner, EXCLUDED.tariffs,
       EXCLUDED.timezone, EXCLUDED.attrs)
RETURNING r.kind, r.id, (r.xmax = 0) AS inserted
