//! Text result sets for the admin console.

use bytes::BytesMut;
use pgpilot_wire::backend;

pub struct ResultSet {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl ResultSet {
    pub fn new(columns: &[&'static str]) -> ResultSet {
        ResultSet { columns: columns.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, values: Vec<Option<String>>) {
        debug_assert_eq!(values.len(), self.columns.len());
        self.rows.push(values);
    }

    pub fn encode(&self, out: &mut BytesMut, tag: &str) {
        backend::row_description_text(out, &self.columns);
        for r in &self.rows {
            backend::data_row(out, r);
        }
        backend::command_complete(out, tag);
    }
}

/// `Some(value.to_string())`, for building rows tersely.
pub fn v(value: impl ToString) -> Option<String> {
    Some(value.to_string())
}
