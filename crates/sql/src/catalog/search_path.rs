//! search_path: parsing the setting and the order PostgreSQL searches schemas in.

/// The schemas of a `search_path` setting value, in order, with `$user` replaced by `user` and
/// double-quoted names unquoted (`"$user", public, "My Schema"` → `[user, public, My Schema]`).
/// Unquoted names are folded to lower case as PostgreSQL does.
pub fn parse_search_path(setting: &str, user: &str) -> Vec<String> {
    split_list(setting)
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| if s == "$user" { user.to_string() } else { s })
        .collect()
}

/// Splits a comma-separated identifier list, honouring double quotes (and "" inside them). A
/// single-quoted item is a string literal as SET writes it (`SET search_path = 'app', public`):
/// for search_path it names one schema, exactly as spelled ('' inside it).
fn split_list(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(ch) = chars.next() {
        match (ch, quote) {
            (q, Some(open)) if q == open && chars.peek() == Some(&q) => {
                chars.next();
                current.push(q);
            }
            (q, Some(open)) if q == open => quote = None,
            (c, Some(_)) => current.push(c),
            ('"' | '\'', None) => quote = Some(ch),
            (',', None) => items.push(std::mem::take(&mut current)),
            (c, None) if c.is_whitespace() => {}
            (c, None) => current.push(c.to_ascii_lowercase()),
        }
    }
    items.push(current);
    items
}

/// The schemas searched for an unqualified name, in order: pg_catalog first unless the path names it
/// elsewhere. pg_temp is skipped: a session's temporary schema cannot be seen from a catalog loaded
/// by another session.
pub(crate) fn schemas_to_search(search_path: &[String]) -> impl Iterator<Item = &str> {
    let implicit_catalog = !search_path.iter().any(|s| s == "pg_catalog");
    implicit_catalog
        .then_some("pg_catalog")
        .into_iter()
        .chain(search_path.iter().map(String::as_str))
        .filter(|s| *s != "pg_temp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_and_quoted_names() {
        assert_eq!(parse_search_path("\"$user\", public", "alice"), vec!["alice", "public"]);
        assert_eq!(parse_search_path("App, \"My \"\"Schema\"\"\"", "u"), vec!["app", "My \"Schema\""]);
        assert_eq!(parse_search_path("", "u"), Vec::<String>::new());
        // As SET writes its value: string literals, each one schema spelled exactly.
        assert_eq!(parse_search_path("'s2'", "u"), vec!["s2"]);
        assert_eq!(parse_search_path("'App', public, 'it''s, one'", "u"), vec!["App", "public", "it's, one"]);
    }

    #[test]
    fn pg_catalog_is_searched_first_unless_placed() {
        let path = vec!["app".to_string(), "pg_temp".to_string()];
        assert_eq!(schemas_to_search(&path).collect::<Vec<_>>(), vec!["pg_catalog", "app"]);
        let path = vec!["app".to_string(), "pg_catalog".to_string()];
        assert_eq!(schemas_to_search(&path).collect::<Vec<_>>(), vec!["app", "pg_catalog"]);
    }
}
