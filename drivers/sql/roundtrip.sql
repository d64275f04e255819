-- Every type of the driver scenario in one statement (see docs/drivers.md): the values come back
-- as results, and `digest` is computed by the server from the parameters, so a parameter the
-- server misread shows even when the driver would decode its own mistake back symmetrically.
SELECT $1::int4 AS i4, $2::int8 AS i8, $3::numeric AS num, $4::text AS txt,
       $5::bool AS flag, $6::timestamptz AS ts, $7::date AS day, $8::uuid AS id, $9::jsonb AS doc,
       $10::bytea AS raw, $11::int4[] AS ints, $12::text[] AS texts, $13::text AS nothing,
       concat_ws('|', $1::int4 + 1, $2::int8 * 2, ($3::numeric * 4)::int8, length($4::text),
                 NOT $5::bool, (extract(epoch FROM $6::timestamptz) * 1000)::int8,
                 $7::date - DATE '2000-01-01', $8::uuid, $9::jsonb ->> 'k', encode($10::bytea, 'hex'),
                 array_to_string($11::int4[], ','), array_to_string($12::text[], ','),
                 $13::text IS NULL) AS digest
