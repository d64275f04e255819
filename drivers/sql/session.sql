-- The client's view of its session: its own search_path and time zone, and a table that exists
-- only in its own schema (see docs/drivers.md).
SELECT current_setting('search_path') AS search_path,
       current_setting('TimeZone') AS time_zone,
       extract(timezone FROM now())::int4 AS utc_offset,
       (SELECT owner FROM mine) AS owner
