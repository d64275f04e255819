//! Parsing a config file's TOML without echoing it: toml's own error message quotes the offending
//! line, and a config line may carry a password (a postgres:// URL); the message goes to check-config's
//! output, the log on reload and the admin who ran RELOAD. The gateway's config uses it too.

use serde::de::DeserializeOwned;

/// Parses `text`; an error names the line and column and what is wrong, never the line itself.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| describe(text, &e))
}

fn describe(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct T {
        primary: String,
    }

    #[test]
    fn a_syntax_error_names_the_place_not_the_text() {
        let text = "# c\nprimary = \"postgres://u:TOMLSECRET@h/db\" x\n";
        let err = parse_toml::<T>(text).unwrap_err();
        assert!(!err.contains("TOMLSECRET"), "{err}");
        assert!(err.starts_with("line 2, column"), "{err}");
    }

    #[test]
    fn a_type_error_names_the_place_not_the_text() {
        let err = parse_toml::<T>("primary = 5 # TOMLSECRET\n").unwrap_err();
        assert!(!err.contains("TOMLSECRET"), "{err}");
        assert!(err.starts_with("line 1, column 11"), "{err}");
    }
}
