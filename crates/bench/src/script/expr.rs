//! pgbench's `\set` expression language: integers, doubles, booleans, variables, the usual
//! operators with pgbench's precedence, CASE, and its functions (random, random_gaussian,
//! random_exponential, random_zipfian, hash, abs, least, greatest, int, double, sqrt, ...).

use rand::Rng;

use super::random;
use super::{ScriptError, Value, VarTable};

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Const(Value),
    Var(usize),
    Neg(Box<Expr>),
    BitNot(Box<Expr>),
    Not(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    Case(Vec<(Expr, Expr)>, Option<Box<Expr>>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    BitOr,
    BitXor,
    BitAnd,
    Shl,
    Shr,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Func {
    Abs,
    Debug,
    Double,
    Exp,
    Greatest,
    Hash,
    HashFnv1a,
    HashMurmur2,
    Int,
    Least,
    Ln,
    Mod,
    Pi,
    Pow,
    Random,
    RandomExponential,
    RandomGaussian,
    RandomZipfian,
    Sqrt,
}

impl Func {
    fn lookup(name: &str) -> Option<(Func, std::ops::RangeInclusive<usize>)> {
        let f = match name {
            "abs" => (Func::Abs, 1..=1),
            "debug" => (Func::Debug, 1..=1),
            "double" => (Func::Double, 1..=1),
            "exp" => (Func::Exp, 1..=1),
            "greatest" => (Func::Greatest, 1..=usize::MAX),
            "hash" => (Func::Hash, 1..=2),
            "hash_fnv1a" => (Func::HashFnv1a, 1..=2),
            "hash_murmur2" => (Func::HashMurmur2, 1..=2),
            "int" => (Func::Int, 1..=1),
            "least" => (Func::Least, 1..=usize::MAX),
            "ln" => (Func::Ln, 1..=1),
            "mod" => (Func::Mod, 2..=2),
            "pi" => (Func::Pi, 0..=0),
            "pow" | "power" => (Func::Pow, 2..=2),
            "random" => (Func::Random, 2..=2),
            "random_exponential" => (Func::RandomExponential, 3..=3),
            "random_gaussian" => (Func::RandomGaussian, 3..=3),
            "random_zipfian" => (Func::RandomZipfian, 3..=3),
            "sqrt" => (Func::Sqrt, 1..=1),
            _ => return None,
        };
        Some(f)
    }
}

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Double(f64),
    Var(String),
    Word(String),
    Op(&'static str),
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    const OPS: [&str; 20] = [
        "<>", "!=", "<=", ">=", "<<", ">>", "(", ")", ",", "+", "-", "*", "/", "%", "<", ">", "=", "|", "&",
        "#",
    ];
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                // exponent sign: 1e-3
                if matches!(b[i], b'e' | b'E') && matches!(b.get(i + 1), Some(b'+' | b'-')) {
                    i += 1;
                }
                i += 1;
            }
            let text = &src[start..i];
            if let Ok(v) = text.parse::<i64>() {
                toks.push(Tok::Int(v));
            } else if let Ok(v) = text.parse::<f64>() {
                toks.push(Tok::Double(v));
            } else {
                return Err(format!("bad number `{text}`"));
            }
        } else if c == b':' {
            let start = i + 1;
            i = start;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
                i += 1;
            }
            if i == start {
                return Err("`:` must be followed by a variable name".into());
            }
            toks.push(Tok::Var(src[start..i].to_string()));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            toks.push(Tok::Word(src[start..i].to_ascii_lowercase()));
        } else if c == b'~' {
            toks.push(Tok::Op("~"));
            i += 1;
        } else if let Some(op) = OPS.iter().find(|op| src[i..].starts_with(**op)) {
            toks.push(Tok::Op(op));
            i += op.len();
        } else {
            return Err(format!("unexpected character `{}`", &src[i..].chars().next().unwrap_or('?')));
        }
    }
    Ok(toks)
}

// ---------------------------------------------------------------- parser

struct Parser<'v> {
    toks: Vec<Tok>,
    pos: usize,
    vars: &'v mut VarTable,
}

/// Parses an expression, registering the variables it names.
pub fn parse(src: &str, vars: &mut VarTable) -> Result<Expr, ScriptError> {
    let toks = tokenize(src).map_err(ScriptError::msg)?;
    let mut p = Parser { toks, pos: 0, vars };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return Err(ScriptError::msg(format!("unexpected `{:?}` in expression", p.toks[p.pos])));
    }
    Ok(e)
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(x)) if x == w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), ScriptError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(ScriptError::msg(format!("expected `{op}` in expression")))
        }
    }

    fn binary_level(
        &mut self,
        next: fn(&mut Self) -> Result<Expr, ScriptError>,
        ops: &[(&str, BinOp)],
        words: bool,
    ) -> Result<Expr, ScriptError> {
        let mut left = next(self)?;
        'outer: loop {
            for (text, op) in ops {
                let hit = if words { self.eat_word(text) } else { self.eat_op(text) };
                if hit {
                    let right = next(self)?;
                    left = Expr::Binary(*op, Box::new(left), Box::new(right));
                    continue 'outer;
                }
            }
            return Ok(left);
        }
    }

    fn or(&mut self) -> Result<Expr, ScriptError> {
        self.binary_level(Self::and, &[("or", BinOp::Or)], true)
    }

    fn and(&mut self) -> Result<Expr, ScriptError> {
        self.binary_level(Self::not, &[("and", BinOp::And)], true)
    }

    fn not(&mut self) -> Result<Expr, ScriptError> {
        if self.eat_word("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ScriptError> {
        let left = self.bits()?;
        const CMP: [(&str, BinOp); 7] = [
            ("<>", BinOp::Ne),
            ("!=", BinOp::Ne),
            ("<=", BinOp::Le),
            (">=", BinOp::Ge),
            ("<", BinOp::Lt),
            (">", BinOp::Gt),
            ("=", BinOp::Eq),
        ];
        for (text, op) in CMP {
            if self.eat_op(text) {
                return Ok(Expr::Binary(op, Box::new(left), Box::new(self.bits()?)));
            }
        }
        Ok(left)
    }

    fn bits(&mut self) -> Result<Expr, ScriptError> {
        let ops = [
            ("|", BinOp::BitOr),
            ("#", BinOp::BitXor),
            ("&", BinOp::BitAnd),
            ("<<", BinOp::Shl),
            (">>", BinOp::Shr),
        ];
        self.binary_level(Self::additive, &ops, false)
    }

    fn additive(&mut self) -> Result<Expr, ScriptError> {
        self.binary_level(Self::multiplicative, &[("+", BinOp::Add), ("-", BinOp::Sub)], false)
    }

    fn multiplicative(&mut self) -> Result<Expr, ScriptError> {
        self.binary_level(Self::unary, &[("*", BinOp::Mul), ("/", BinOp::Div), ("%", BinOp::Mod)], false)
    }

    fn unary(&mut self) -> Result<Expr, ScriptError> {
        if self.eat_op("-") {
            return Ok(match self.unary()? {
                Expr::Const(Value::Int(v)) => Expr::Const(Value::Int(v.wrapping_neg())),
                Expr::Const(Value::Double(v)) => Expr::Const(Value::Double(-v)),
                e => Expr::Neg(Box::new(e)),
            });
        }
        if self.eat_op("+") {
            return self.unary();
        }
        if self.eat_op("~") {
            return Ok(Expr::BitNot(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ScriptError> {
        let tok = self.peek().cloned().ok_or_else(|| ScriptError::msg("expression ends too early"))?;
        self.pos += 1;
        match tok {
            Tok::Int(v) => Ok(Expr::Const(Value::Int(v))),
            Tok::Double(v) => Ok(Expr::Const(Value::Double(v))),
            Tok::Var(name) => Ok(Expr::Var(self.vars.intern(&name))),
            Tok::Op("(") => {
                let e = self.or()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Tok::Word(w) => match w.as_str() {
                "true" => Ok(Expr::Const(Value::Bool(true))),
                "false" => Ok(Expr::Const(Value::Bool(false))),
                "null" => Ok(Expr::Const(Value::Null)),
                "case" => self.case(),
                _ => self.call(&w),
            },
            Tok::Op(op) => Err(ScriptError::msg(format!("unexpected `{op}` in expression"))),
        }
    }

    fn case(&mut self) -> Result<Expr, ScriptError> {
        let mut arms = Vec::new();
        while self.eat_word("when") {
            let cond = self.or()?;
            if !self.eat_word("then") {
                return Err(ScriptError::msg("expected THEN in CASE"));
            }
            arms.push((cond, self.or()?));
        }
        if arms.is_empty() {
            return Err(ScriptError::msg("CASE needs at least one WHEN"));
        }
        let otherwise = if self.eat_word("else") { Some(Box::new(self.or()?)) } else { None };
        if !self.eat_word("end") {
            return Err(ScriptError::msg("expected END to close CASE"));
        }
        Ok(Expr::Case(arms, otherwise))
    }

    fn call(&mut self, name: &str) -> Result<Expr, ScriptError> {
        let (func, arity) =
            Func::lookup(name).ok_or_else(|| ScriptError::msg(format!("unknown function `{name}`")))?;
        self.expect_op("(")?;
        let mut args = Vec::new();
        if !self.eat_op(")") {
            loop {
                args.push(self.or()?);
                if self.eat_op(")") {
                    break;
                }
                self.expect_op(",")?;
            }
        }
        if !arity.contains(&args.len()) {
            return Err(ScriptError::msg(format!("wrong number of arguments for {name}()")));
        }
        Ok(Expr::Call(func, args))
    }
}

// ---------------------------------------------------------------- evaluation

/// What evaluation may read and change.
pub struct Env<'a, R: Rng> {
    pub vars: &'a [Option<Value>],
    pub names: &'a [String],
    pub rng: &'a mut R,
    pub default_seed: i64,
}

impl Expr {
    pub fn eval<R: Rng>(&self, env: &mut Env<'_, R>) -> Result<Value, String> {
        match self {
            Expr::Const(v) => Ok(v.clone()),
            Expr::Var(i) => match env.vars.get(*i).and_then(Option::as_ref) {
                Some(v) => Ok(v.clone()),
                None => Err(format!("undefined variable `{}`", env.names.get(*i).map_or("?", |s| s))),
            },
            Expr::Neg(e) => match e.eval(env)?.numeric()? {
                Value::Int(v) => v.checked_neg().map(Value::Int).ok_or_else(overflow),
                Value::Double(v) => Ok(Value::Double(-v)),
                _ => unreachable!("numeric() returns Int or Double"),
            },
            Expr::BitNot(e) => Ok(Value::Int(!e.eval(env)?.as_int()?)),
            Expr::Not(e) => Ok(Value::Bool(!e.eval(env)?.as_bool()?)),
            Expr::Binary(op, l, r) => binary(*op, l, r, env),
            Expr::Call(f, args) => call(*f, args, env),
            Expr::Case(arms, otherwise) => {
                for (cond, value) in arms {
                    if cond.eval(env)?.as_bool()? {
                        return value.eval(env);
                    }
                }
                otherwise.as_ref().map_or(Ok(Value::Null), |e| e.eval(env))
            }
        }
    }
}

fn overflow() -> String {
    "bigint out of range".to_string()
}

fn binary<R: Rng>(op: BinOp, l: &Expr, r: &Expr, env: &mut Env<'_, R>) -> Result<Value, String> {
    // AND/OR short-circuit like pgbench.
    match op {
        BinOp::And => return Ok(Value::Bool(l.eval(env)?.as_bool()? && r.eval(env)?.as_bool()?)),
        BinOp::Or => return Ok(Value::Bool(l.eval(env)?.as_bool()? || r.eval(env)?.as_bool()?)),
        _ => {}
    }
    let (a, b) = (l.eval(env)?, r.eval(env)?);
    match op {
        BinOp::BitOr => return Ok(Value::Int(a.as_int()? | b.as_int()?)),
        BinOp::BitXor => return Ok(Value::Int(a.as_int()? ^ b.as_int()?)),
        BinOp::BitAnd => return Ok(Value::Int(a.as_int()? & b.as_int()?)),
        BinOp::Shl => return Ok(Value::Int(a.as_int()?.wrapping_shl(b.as_int()? as u32))),
        BinOp::Shr => return Ok(Value::Int(a.as_int()?.wrapping_shr(b.as_int()? as u32))),
        _ => {}
    }
    match (a.numeric()?, b.numeric()?) {
        (Value::Int(x), Value::Int(y)) => int_op(op, x, y),
        (x, y) => double_op(op, x.as_double()?, y.as_double()?),
    }
}

fn int_op(op: BinOp, x: i64, y: i64) -> Result<Value, String> {
    let v = match op {
        BinOp::Add => x.checked_add(y).ok_or_else(overflow)?,
        BinOp::Sub => x.checked_sub(y).ok_or_else(overflow)?,
        BinOp::Mul => x.checked_mul(y).ok_or_else(overflow)?,
        BinOp::Div | BinOp::Mod if y == 0 => return Err("division by zero".into()),
        BinOp::Div => x.checked_div(y).ok_or_else(overflow)?,
        BinOp::Mod => x.checked_rem(y).unwrap_or(0),
        cmp => return Ok(Value::Bool(compare(cmp, x.cmp(&y)))),
    };
    Ok(Value::Int(v))
}

fn double_op(op: BinOp, x: f64, y: f64) -> Result<Value, String> {
    let v = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div if y == 0.0 => return Err("division by zero".into()),
        BinOp::Div => x / y,
        BinOp::Mod => return Err("% needs integer operands".into()),
        cmp => {
            let ord = x.partial_cmp(&y).ok_or("comparison with NaN")?;
            return Ok(Value::Bool(compare(cmp, ord)));
        }
    };
    Ok(Value::Double(v))
}

fn compare(op: BinOp, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        BinOp::Eq => ord == Equal,
        BinOp::Ne => ord != Equal,
        BinOp::Lt => ord == Less,
        BinOp::Le => ord != Greater,
        BinOp::Gt => ord == Greater,
        BinOp::Ge => ord != Less,
        _ => unreachable!("only comparisons reach here"),
    }
}

fn call<R: Rng>(f: Func, args: &[Expr], env: &mut Env<'_, R>) -> Result<Value, String> {
    let mut vals = Vec::with_capacity(args.len());
    for a in args {
        vals.push(a.eval(env)?);
    }
    let int = |i: usize| vals[i].as_int();
    let dbl = |i: usize| vals[i].as_double();
    let v = match f {
        Func::Random => Value::Int(random::uniform(env.rng, int(0)?, int(1)?)?),
        Func::RandomGaussian => Value::Int(random::gaussian(env.rng, int(0)?, int(1)?, dbl(2)?)?),
        Func::RandomExponential => Value::Int(random::exponential(env.rng, int(0)?, int(1)?, dbl(2)?)?),
        Func::RandomZipfian => Value::Int(random::zipfian(env.rng, int(0)?, int(1)?, dbl(2)?)?),
        Func::Abs => match vals[0].numeric()? {
            Value::Int(v) => Value::Int(v.checked_abs().ok_or_else(overflow)?),
            other => Value::Double(other.as_double()?.abs()),
        },
        Func::Debug => {
            eprintln!("debug(script): {}", vals[0]);
            vals[0].clone()
        }
        Func::Double => Value::Double(dbl(0)?),
        Func::Int => Value::Int(match vals[0].numeric()? {
            Value::Double(d) if d.is_finite() && d.abs() < 9.2e18 => d.trunc() as i64,
            Value::Double(_) => return Err(overflow()),
            other => other.as_int()?,
        }),
        Func::Exp => Value::Double(dbl(0)?.exp()),
        Func::Ln => Value::Double(dbl(0)?.ln()),
        Func::Sqrt => Value::Double(dbl(0)?.sqrt()),
        Func::Pi => Value::Double(std::f64::consts::PI),
        Func::Pow => Value::Double(dbl(0)?.powf(dbl(1)?)),
        Func::Mod => int_op(BinOp::Mod, int(0)?, int(1)?)?,
        Func::Least | Func::Greatest => extreme(f == Func::Greatest, &vals)?,
        Func::Hash | Func::HashMurmur2 | Func::HashFnv1a => {
            let seed = if vals.len() > 1 { int(1)? } else { env.default_seed } as u64;
            let h = if f == Func::HashFnv1a {
                random::hash_fnv1a(int(0)?, seed)
            } else {
                random::hash_murmur2(int(0)?, seed)
            };
            Value::Int(h)
        }
    };
    Ok(v)
}

fn extreme(greatest: bool, vals: &[Value]) -> Result<Value, String> {
    let all_int = vals.iter().all(|v| matches!(v.numeric(), Ok(Value::Int(_))));
    if all_int {
        let ints = vals.iter().map(Value::as_int).collect::<Result<Vec<_>, _>>()?;
        let v = if greatest { ints.iter().max() } else { ints.iter().min() };
        return Ok(Value::Int(*v.expect("at least one argument")));
    }
    let mut best = vals[0].as_double()?;
    for v in &vals[1..] {
        let d = v.as_double()?;
        if (greatest && d > best) || (!greatest && d < best) {
            best = d;
        }
    }
    Ok(Value::Double(best))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn eval_with(src: &str, vars: &[(&str, Value)]) -> Result<Value, String> {
        let mut table = VarTable::default();
        for (name, _) in vars {
            table.intern(name);
        }
        let expr = parse(src, &mut table).map_err(|e| e.to_string())?;
        let mut values = vec![None; table.len()];
        for (name, v) in vars {
            values[table.get(name).unwrap()] = Some(v.clone());
        }
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut env = Env { vars: &values, names: table.names(), rng: &mut rng, default_seed: 1 };
        expr.eval(&mut env)
    }

    fn eval(src: &str) -> Value {
        eval_with(src, &[]).unwrap()
    }

    #[test]
    fn arithmetic_and_precedence() {
        assert_eq!(eval("1 + 2 * 3"), Value::Int(7));
        assert_eq!(eval("(1 + 2) * 3"), Value::Int(9));
        assert_eq!(eval("7 / 2"), Value::Int(3));
        assert_eq!(eval("-7 % 3"), Value::Int(-1));
        assert_eq!(eval("7 / 2.0"), Value::Double(3.5));
        assert_eq!(eval("1 + 2 = 3 and not 2 > 3"), Value::Bool(true));
        assert_eq!(eval("1 << 4 | 1"), Value::Int(17));
        assert_eq!(eval("case when 1 > 2 then 10 when 2 > 1 then 20 else 30 end"), Value::Int(20));
        assert_eq!(eval("greatest(1, 5, 3) + least(4, 2)"), Value::Int(7));
        assert_eq!(eval("int(2.9) + abs(-3)"), Value::Int(5));
        assert_eq!(eval("sqrt(16) + pow(2, 3)"), Value::Double(12.0));
        assert_eq!(eval("mod(10, 4)"), Value::Int(2));
        assert_eq!(eval_with("100000 * :scale", &[("scale", Value::Int(3))]).unwrap(), Value::Int(300000));
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        assert!(eval_with("1 / 0", &[]).unwrap_err().contains("division by zero"));
        assert!(eval_with("9223372036854775807 + 1", &[]).unwrap_err().contains("out of range"));
        assert!(eval_with(":nope + 1", &[]).unwrap_err().contains("undefined variable"));
        assert!(eval_with("random(5, 1)", &[]).is_err());
        assert!(eval_with("nosuch(1)", &[]).is_err());
        assert!(eval_with("random(1)", &[]).is_err());
        assert!(eval_with("1 +", &[]).is_err());
        assert!(eval_with("(1 + 2", &[]).is_err());
    }

    #[test]
    fn random_functions_stay_in_range() {
        for src in [
            "random(1, 10)",
            "random_gaussian(1, 10, 2.5)",
            "random_exponential(1, 10, 3.0)",
            "random_zipfian(1, 10, 1.5)",
        ] {
            for _ in 0..200 {
                match eval(src) {
                    Value::Int(v) => assert!((1..=10).contains(&v), "{src} gave {v}"),
                    other => panic!("{src} gave {other:?}"),
                }
            }
        }
    }

    #[test]
    fn text_variables_are_numbers_when_they_look_like_numbers() {
        let v = eval_with(":x * 2", &[("x", Value::Text("21".into()))]).unwrap();
        assert_eq!(v, Value::Int(42));
        assert!(eval_with(":x * 2", &[("x", Value::Text("abc".into()))]).is_err());
    }
}
