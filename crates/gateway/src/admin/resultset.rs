//! Result sets for the admin console: text cells, each column typed as PgBouncer's are (numbers
//! as integers), so typed drivers and exporters get numbers rather than strings.

use std::sync::Arc;

use bytes::BytesMut;
use pgpilot_wire::backend;

/// The column types the console uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int4,
    Int8,
    Numeric,
}

impl Kind {
    fn oid(self) -> u32 {
        match self {
            Kind::Text => 25,
            Kind::Int4 => 23,
            Kind::Int8 => 20,
            Kind::Numeric => 1700,
        }
    }
}

/// One value in its text form (`None` is SQL NULL) and the type it has.
#[derive(Debug, Clone)]
pub struct Cell {
    pub text: Option<String>,
    pub kind: Kind,
}

impl Cell {
    pub const NULL: Cell = Cell { text: None, kind: Kind::Text };
}

pub struct ResultSet {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    /// Column types fixed whatever the values (PgBouncer's, for columns it types otherwise).
    fixed: Vec<Option<Kind>>,
    /// The type integer columns are sent as.
    integers: Kind,
}

impl ResultSet {
    pub fn new(columns: &[&'static str]) -> ResultSet {
        ResultSet {
            columns: columns.to_vec(),
            rows: Vec::new(),
            fixed: vec![None; columns.len()],
            integers: Kind::Int8,
        }
    }

    /// Sends every integer column as `kind` (PgBouncer: int4 counts, numeric statistics), so
    /// drivers decode them as they do PgBouncer's (node-postgres gives strings for int8).
    pub fn integers_as(mut self, kind: Kind) -> ResultSet {
        self.integers = kind;
        self
    }

    /// Sends `columns` as `kind`, with or without rows.
    pub fn typed(mut self, kind: Kind, columns: &[&str]) -> ResultSet {
        for (i, name) in self.columns.iter().enumerate() {
            if columns.contains(name) {
                self.fixed[i] = Some(kind);
            }
        }
        self
    }

    /// Keeps the first `n` columns.
    pub fn keep_columns(&mut self, n: usize) {
        self.columns.truncate(n);
        self.fixed.truncate(n);
        for row in &mut self.rows {
            row.truncate(n);
        }
    }

    pub fn row(&mut self, values: Vec<Cell>) {
        debug_assert_eq!(values.len(), self.columns.len());
        self.rows.push(values);
    }

    /// A column's type is its fixed one, else that of its first non-NULL value (text when it
    /// has none).
    fn kinds(&self) -> Vec<u32> {
        (0..self.columns.len())
            .map(|i| {
                let first = self.rows.iter().map(|r| &r[i]).find(|c| c.text.is_some());
                let of_values = match first.map_or(Kind::Text, |c| c.kind) {
                    Kind::Int8 => self.integers,
                    other => other,
                };
                self.fixed[i].unwrap_or(of_values).oid()
            })
            .collect()
    }

    pub fn encode(&self, out: &mut BytesMut, tag: &str) {
        backend::row_description_typed(out, &self.columns, &self.kinds());
        for r in &self.rows {
            let texts: Vec<Option<&str>> = r.iter().map(|c| c.text.as_deref()).collect();
            backend::data_row(out, &texts);
        }
        backend::command_complete(out, tag);
    }
}

/// A value that can sit in a console cell.
pub trait CellValue {
    fn cell(self) -> Cell;
}

/// Values of these types are cells of that kind, in their `to_string` form.
macro_rules! cells {
    ($kind:expr => $($t:ty),*) => {$(
        impl CellValue for $t {
            fn cell(self) -> Cell {
                Cell { text: Some(self.to_string()), kind: $kind }
            }
        }
    )*};
}
cells!(Kind::Int8 => u8, u16, u32, u64, usize, i8, i16, i32, i64);
cells!(Kind::Text => &str, String, &String, &Arc<str>, bool, f64);

impl<T: CellValue> CellValue for Option<T> {
    fn cell(self) -> Cell {
        self.map_or(Cell::NULL, CellValue::cell)
    }
}

/// A cell, for building rows tersely.
pub fn v(value: impl CellValue) -> Cell {
    value.cell()
}
