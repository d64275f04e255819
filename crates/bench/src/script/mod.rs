//! pgbench-compatible scripts: SQL commands with `:variables`, and the meta-commands `\set`,
//! `\sleep`, `\gset` and `\aset`. A script is compiled once; variables become slots in a
//! per-client array so the hot path never looks a name up.

mod builtin;
mod copy;
pub mod expr;
mod lex;
pub mod random;

use std::collections::HashMap;
use std::fmt;

pub use builtin::{builtin, BUILTIN_NAMES};
pub use expr::Expr;
pub use lex::{Capture, Piece};

#[derive(Debug, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ScriptError {
    pub line: Option<usize>,
    pub message: String,
}

impl ScriptError {
    pub fn msg(message: impl Into<String>) -> ScriptError {
        ScriptError { line: None, message: message.into() }
    }

    pub fn at(line: usize, message: impl Into<String>) -> ScriptError {
        ScriptError { line: Some(line), message: message.into() }
    }
}

/// A variable's value: pgbench's integers, doubles and booleans, or text from `-D` and `\gset`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Text(String),
}

impl Value {
    /// Text as the user wrote it: an integer, then a double, else text.
    pub fn from_text(s: &str) -> Value {
        let t = s.trim();
        if let Ok(i) = t.parse::<i64>() {
            Value::Int(i)
        } else if let Ok(d) = t.parse::<f64>() {
            Value::Double(d)
        } else {
            Value::Text(s.to_string())
        }
    }

    /// Int or Double; text is parsed, anything else is an error.
    pub fn numeric(&self) -> Result<Value, String> {
        match self {
            Value::Int(_) | Value::Double(_) => Ok(self.clone()),
            Value::Text(t) => match Value::from_text(t) {
                Value::Text(_) => Err(format!("`{t}` is not a number")),
                v => Ok(v),
            },
            Value::Bool(_) => Err("a boolean is not a number".into()),
            Value::Null => Err("NULL is not a number".into()),
        }
    }

    pub fn as_int(&self) -> Result<i64, String> {
        match self.numeric()? {
            Value::Int(i) => Ok(i),
            Value::Double(d) if d.fract() == 0.0 && d.abs() < 9.2e18 => Ok(d as i64),
            Value::Double(d) => Err(format!("{d} is not an integer")),
            _ => unreachable!("numeric() returns Int or Double"),
        }
    }

    pub fn as_double(&self) -> Result<f64, String> {
        match self.numeric()? {
            Value::Int(i) => Ok(i as f64),
            Value::Double(d) => Ok(d),
            _ => unreachable!("numeric() returns Int or Double"),
        }
    }

    pub fn as_bool(&self) -> Result<bool, String> {
        match self {
            Value::Bool(b) => Ok(*b),
            Value::Int(i) => Ok(*i != 0),
            Value::Double(d) => Ok(*d != 0.0),
            Value::Null => Ok(false),
            Value::Text(t) => Err(format!("`{t}` is not a boolean")),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Double(d) => write!(f, "{d}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

/// Variable names and their slot numbers, shared by all scripts of a run.
#[derive(Debug, Default, Clone)]
pub struct VarTable {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl VarTable {
    pub fn intern(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }

    pub fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One step of a script.
#[derive(Debug, Clone)]
pub enum Command {
    Sql(SqlCommand),
    Set { var: usize, expr: Expr },
    Sleep { amount: Expr, unit_us: u64 },
}

/// A piece of an SQL command after compilation: literal text or a variable slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Var(usize),
}

#[derive(Debug, Clone)]
pub struct SqlCommand {
    /// For the simple protocol: values are substituted into the text.
    pub parts: Vec<Part>,
    /// For the extended protocols: each variable occurrence becomes `$n`.
    pub param_sql: String,
    pub params: Vec<usize>,
    /// The prepared statement's name in `prepared` mode, unique within a run.
    pub statement: String,
    /// A dense number for this command across all scripts (per-connection prepared flags).
    pub slot: usize,
    pub capture: Option<Capture>,
    pub line: usize,
}

impl SqlCommand {
    /// The SQL text when it has no variables (sent as is).
    pub fn static_text(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            [] => Some(""),
            _ => None,
        }
    }
}

/// A compiled script with its selection weight.
#[derive(Debug, Clone)]
pub struct Script {
    pub name: String,
    /// Relative to the other scripts' (the plan counts in hundredths of a `-b`/`-f` weight).
    pub weight: u64,
    pub commands: Vec<Command>,
}

impl Script {
    pub fn sql_count(&self) -> usize {
        self.commands.iter().filter(|c| matches!(c, Command::Sql(_))).count()
    }
}

/// Compiles script sources against one variable table. `predefined` are variables the run sets
/// before the first transaction (scale, client_id, -D ...): `:name` in SQL is substituted only for
/// variables that are predefined, assigned by `\set`, or may come from `\gset`.
pub fn compile(
    sources: &[(String, u64, String)],
    vars: &mut VarTable,
) -> Result<Vec<Script>, (String, ScriptError)> {
    let mut raw = Vec::new();
    for (name, weight, text) in sources {
        let cmds = lex::split(text).map_err(|e| (name.clone(), e))?;
        if cmds.is_empty() {
            // A transaction that does nothing would be "measured" at millions per second.
            return Err((
                name.clone(),
                ScriptError::msg("the script has no commands (empty, or only comments)"),
            ));
        }
        raw.push((name.clone(), *weight, cmds));
    }
    // Pass 1: every variable a script can assign.
    let mut any_capture = false;
    for (name, _, cmds) in &raw {
        for cmd in cmds {
            match cmd {
                lex::RawCommand::Meta { name: m, args, line } if m == "set" => {
                    let var = args.split_whitespace().next().ok_or_else(|| {
                        (
                            name.clone(),
                            ScriptError::at(*line, "\\set needs a variable name and an expression"),
                        )
                    })?;
                    vars.intern(var);
                }
                lex::RawCommand::Sql { capture: Some(_), .. } => any_capture = true,
                _ => {}
            }
        }
    }
    let mut scripts = Vec::new();
    let mut slot = 0;
    for (idx, (name, weight, cmds)) in raw.into_iter().enumerate() {
        let mut commands = Vec::new();
        for (n, cmd) in cmds.into_iter().enumerate() {
            let c = compile_command(cmd, vars, any_capture, format!("pgpilot_{idx}_{n}"), slot)
                .map_err(|e| (name.clone(), e))?;
            slot += matches!(c, Command::Sql(_)) as usize;
            commands.push(c);
        }
        scripts.push(Script { name, weight, commands });
    }
    Ok(scripts)
}

fn compile_command(
    cmd: lex::RawCommand,
    vars: &mut VarTable,
    any_capture: bool,
    statement: String,
    slot: usize,
) -> Result<Command, ScriptError> {
    match cmd {
        lex::RawCommand::Sql { pieces, capture, line } => {
            if copy::copies_through_client(&pieces) {
                return Err(ScriptError::at(
                    line,
                    "COPY FROM STDIN / TO STDOUT is not supported by pgpilot bench (a COPY to or from a \
                     file on the server is)",
                ));
            }
            let mut parts: Vec<Part> = Vec::new();
            let mut param_sql = String::new();
            let mut params = Vec::new();
            for piece in pieces {
                match piece {
                    Piece::Var(name) if vars.get(&name).is_some() || any_capture => {
                        let var = vars.intern(&name);
                        parts.push(Part::Var(var));
                        params.push(var);
                        param_sql.push_str(&format!("${}", params.len()));
                    }
                    Piece::Var(name) => push_text(&mut parts, &mut param_sql, &format!(":{name}")),
                    Piece::Text(t) => push_text(&mut parts, &mut param_sql, &t),
                }
            }
            Ok(Command::Sql(SqlCommand { parts, param_sql, params, statement, slot, capture, line }))
        }
        lex::RawCommand::Meta { name, args, line } => compile_meta(&name, &args, line, vars),
    }
}

fn push_text(parts: &mut Vec<Part>, param_sql: &mut String, text: &str) {
    param_sql.push_str(text);
    if let Some(Part::Text(t)) = parts.last_mut() {
        t.push_str(text);
    } else {
        parts.push(Part::Text(text.to_string()));
    }
}

fn compile_meta(name: &str, args: &str, line: usize, vars: &mut VarTable) -> Result<Command, ScriptError> {
    let at = |e: ScriptError| ScriptError::at(line, e.message);
    match name {
        "set" => {
            let (var, expr) = args
                .split_once(char::is_whitespace)
                .ok_or_else(|| ScriptError::at(line, "\\set needs a variable name and an expression"))?;
            let var = vars.intern(var);
            Ok(Command::Set { var, expr: expr::parse(expr, vars).map_err(at)? })
        }
        "sleep" => {
            let mut words = args.split_whitespace();
            let amount = words.next().ok_or_else(|| ScriptError::at(line, "\\sleep needs a duration"))?;
            let unit_us = match words.next().map(str::to_ascii_lowercase).as_deref() {
                None | Some("s") => 1_000_000,
                Some("ms") => 1_000,
                Some("us") => 1,
                Some(other) => return Err(ScriptError::at(line, format!("\\sleep: unknown unit `{other}`"))),
            };
            Ok(Command::Sleep { amount: expr::parse(amount, vars).map_err(at)?, unit_us })
        }
        "if" | "elif" | "else" | "endif" | "shell" | "setshell" | "startpipeline" | "endpipeline"
        | "syncpipeline" => Err(ScriptError::at(line, format!("\\{name} is not supported by pgpilot bench"))),
        other => Err(ScriptError::at(line, format!("unknown meta-command \\{other}"))),
    }
}

/// Splits `name@weight` (the weight defaults to 1; pgbench's syntax for -f and -b).
pub fn split_weight(spec: &str) -> Result<(&str, u32), String> {
    match spec.rsplit_once('@') {
        Some((name, w)) if !name.is_empty() => {
            let weight =
                w.parse::<u32>().map_err(|_| format!("`{spec}`: the weight after @ must be an integer"))?;
            Ok((name, weight))
        }
        _ => Ok((spec, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> (Vec<Script>, VarTable) {
        let mut vars = VarTable::default();
        vars.intern("scale");
        let scripts = compile(&[("t".into(), 1, text.into())], &mut vars).unwrap();
        (scripts, vars)
    }

    #[test]
    fn variables_become_parameters() {
        let (s, vars) =
            one("\\set aid random(1, 100000 * :scale)\nSELECT :aid, :aid::text, ':aid', :unknown;");
        let Command::Sql(sql) = &s[0].commands[1] else { panic!() };
        assert_eq!(sql.param_sql, "SELECT $1, $2::text, ':aid', :unknown");
        let aid = vars.get("aid").unwrap();
        assert_eq!(sql.params, vec![aid, aid]);
        assert_eq!(sql.parts[0], Part::Text("SELECT ".into()));
    }

    #[test]
    fn meta_commands() {
        let (s, _) = one("\\sleep 10 ms\n\\sleep :scale us\n");
        assert!(matches!(s[0].commands[0], Command::Sleep { unit_us: 1000, .. }));
        assert!(matches!(s[0].commands[1], Command::Sleep { unit_us: 1, .. }));
        let mut vars = VarTable::default();
        for bad in [
            "",
            "-- nothing\n/* at all */\n",
            "\\if 1\n",
            "\\set x\n",
            "\\sleep 1 fortnight\n",
            "\\set x 1 +\n",
            "\\frobnicate\n",
            "BEGIN;\nCOPY pgbench_history FROM STDIN;\nCOMMIT;\n",
        ] {
            assert!(compile(&[("t".into(), 1, bad.into())], &mut vars).is_err(), "{bad}");
        }
    }

    #[test]
    fn copy_through_the_client_is_refused_with_its_line() {
        let mut vars = VarTable::default();
        let text = "BEGIN;\ncopy pgbench_history from stdin;\nCOMMIT;\n";
        let (name, e) = compile(&[("t".into(), 1, text.into())], &mut vars).unwrap_err();
        assert_eq!((name.as_str(), e.line), ("t", Some(2)));
        assert!(e.message.contains("COPY FROM STDIN"), "{e}");
        let server_side = "COPY pgbench_history TO '/dev/null';\n";
        assert!(compile(&[("t".into(), 1, server_side.into())], &mut vars).is_ok());
    }

    #[test]
    fn weights() {
        assert_eq!(split_weight("a.sql@5").unwrap(), ("a.sql", 5));
        assert_eq!(split_weight("a.sql").unwrap(), ("a.sql", 1));
        assert!(split_weight("a.sql@x").is_err());
    }
}
