//! Prints the classification of each argument: `cargo run -p pgpilot-sql --example classify -- "SELECT 1"`.
fn main() {
    for sql in std::env::args().skip(1) {
        println!("{sql}\n{:#?}\n", pgpilot_sql::analyze(&sql));
    }
}
