//! SQL that more than one crate's tests set a database up with.

/// Objects that write (into table `log`, through the volatile `wr(int)`) when a statement runs
/// them without naming a volatile function: the view `v_wr`, the operator `###`, a cast to `wt`,
/// the domain `dw`'s CHECK, the aggregate `wagg` (its own provolatile is immutable) and `fdef()`'s
/// parameter default. A standby refuses each of `SELECT * FROM v_wr`, `SELECT 1 ### 2`,
/// `SELECT 1::wt`, `SELECT 1::dw`, `SELECT wagg(1)` and `SELECT fdef()`.
pub const HIDDEN_WRITERS: &str = "
CREATE TABLE log (x int);
CREATE FUNCTION wr(x int) RETURNS int LANGUAGE plpgsql VOLATILE
  AS $$BEGIN INSERT INTO log VALUES (x); RETURN x; END$$;
CREATE VIEW v_wr AS SELECT wr(1) AS w;
CREATE FUNCTION op_wr(a int, b int) RETURNS int LANGUAGE sql VOLATILE AS 'SELECT wr(a + b)';
CREATE OPERATOR ### (FUNCTION = op_wr, LEFTARG = int, RIGHTARG = int);
CREATE TYPE wt AS (v int);
CREATE FUNCTION to_wt(int) RETURNS wt LANGUAGE sql VOLATILE AS 'SELECT ROW(wr($1))::wt';
CREATE CAST (int AS wt) WITH FUNCTION to_wt(int);
CREATE DOMAIN dw AS int CHECK (wr(VALUE) > 0);
CREATE FUNCTION wagg_step(s int, v int) RETURNS int LANGUAGE plpgsql VOLATILE
  AS $$BEGIN PERFORM wr(v); RETURN coalesce(s, 0) + v; END$$;
CREATE AGGREGATE wagg(int) (SFUNC = wagg_step, STYPE = int);
CREATE FUNCTION fdef(x int DEFAULT wr(5)) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x';
";
