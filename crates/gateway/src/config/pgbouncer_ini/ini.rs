//! Reading pgbouncer.ini the way PgBouncer's parser (libusual's cfparser) reads it: comment lines
//! start with `;` or `#` (nowhere else), `[section]` headers, `key = value` to the end of the line,
//! and `%include FILE` at most ten levels deep. The current section carries into and out of an
//! included file, as in PgBouncer.

use std::fmt;
use std::path::{Path, PathBuf};

/// PgBouncer refuses includes nested deeper than this.
const MAX_INCLUDE_DEPTH: usize = 10;

/// Where a line came from, for messages: `pgbouncer.ini:12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    PgBouncer,
    Databases,
    Users,
    Peers,
}

impl Section {
    fn parse(name: &str) -> Option<Section> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "pgbouncer" => Section::PgBouncer,
            "databases" => Section::Databases,
            "users" => Section::Users,
            "peers" => Section::Peers,
            _ => return None,
        })
    }
}

/// One `key = value` line.
#[derive(Debug, Clone)]
pub struct Entry {
    pub section: Section,
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

/// Everything read from a pgbouncer.ini and the files it includes, in reading order.
#[derive(Debug, Default)]
pub struct IniFile {
    pub entries: Vec<Entry>,
    /// Each `%include` and the file it resolved to.
    pub includes: Vec<(Origin, PathBuf)>,
    /// `[pgbouncer]` headers after the first: PgBouncer resets every `[pgbouncer]` setting to its
    /// default at each such header, so settings above it are lost.
    pub pgbouncer_resets: Vec<Origin>,
}

pub fn read(path: &Path) -> Result<IniFile, String> {
    let mut reader = Reader { out: IniFile::default(), section: None, seen_pgbouncer: false };
    reader.file(path, 0)?;
    if !reader.seen_pgbouncer {
        return Err(format!("{}: no [pgbouncer] section (PgBouncer refuses such a file)", path.display()));
    }
    Ok(reader.out)
}

struct Reader {
    out: IniFile,
    section: Option<Section>,
    seen_pgbouncer: bool,
}

impl Reader {
    fn file(&mut self, path: &Path, depth: usize) -> Result<(), String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for (n, raw) in text.lines().enumerate() {
            let origin = Origin { file: path.to_path_buf(), line: n + 1 };
            self.line(raw.trim(), &origin, depth)?;
        }
        Ok(())
    }

    fn line(&mut self, line: &str, origin: &Origin, depth: usize) -> Result<(), String> {
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            return Ok(());
        }
        if let Some(target) = include_target(line) {
            return self.include(target, origin, depth);
        }
        if let Some(rest) = line.strip_prefix('[') {
            let (name, after) =
                rest.split_once(']').ok_or_else(|| format!("{origin}: syntax error: missing ']'"))?;
            let section =
                Section::parse(name).ok_or_else(|| format!("{origin}: invalid section [{name}]"))?;
            if section == Section::PgBouncer {
                if self.seen_pgbouncer {
                    self.out.pgbouncer_resets.push(origin.clone());
                    self.out.entries.retain(|e| e.section != Section::PgBouncer);
                }
                self.seen_pgbouncer = true;
            }
            self.section = Some(section);
            // PgBouncer's parser carries on right after ']' as if a new line began there.
            return self.line(after.trim(), origin, depth);
        }
        let (key, value) = key_value(line).map_err(|e| format!("{origin}: syntax error: {e}"))?;
        let section =
            self.section.ok_or_else(|| format!("{origin}: setting {key} comes before any [section]"))?;
        self.out.entries.push(Entry { section, key, value, origin: origin.clone() });
        Ok(())
    }

    fn include(&mut self, target: &str, origin: &Origin, depth: usize) -> Result<(), String> {
        if depth + 1 > MAX_INCLUDE_DEPTH {
            return Err(format!("{origin}: %include nested more than {MAX_INCLUDE_DEPTH} levels deep"));
        }
        let including_dir = origin.file.parent().unwrap_or(Path::new("."));
        let path = resolve_path(target, including_dir);
        self.out.includes.push((origin.clone(), path.clone()));
        self.file(&path, depth + 1).map_err(|e| format!("{origin}: %include {target}: {e}"))
    }
}

/// `%include FILE` (the keyword, then blanks, then the name up to the end of the line).
fn include_target(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("%include")?;
    rest.starts_with([' ', '\t']).then(|| rest.trim()).filter(|t| !t.is_empty())
}

/// `name = value`. A name is made of letters, digits and `_.-*`, or is double-quoted with `""`
/// standing for a quote (PgBouncer's quoting of database names).
fn key_value(line: &str) -> Result<(String, String), String> {
    let (key, rest) = if let Some(quoted) = line.strip_prefix('"') {
        let mut key = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) if quoted[i + 1..].starts_with('"') => {
                    key.push('"');
                    chars.next();
                }
                Some((i, '"')) => break i + 1,
                Some((_, c)) => key.push(c),
                None => return Err("unterminated quoted name".into()),
            }
        };
        (key, &quoted[end..])
    } else {
        let end =
            line.find(|c: char| !(c.is_ascii_alphanumeric() || "_.-*".contains(c))).unwrap_or(line.len());
        (line[..end].to_string(), &line[end..])
    };
    if key.is_empty() {
        return Err(format!("expected a setting name in {line:?}"));
    }
    let value = rest
        .trim_start_matches([' ', '\t'])
        .strip_prefix('=')
        .ok_or_else(|| format!("expected '=' after {key}"))?;
    Ok((key, value.trim().to_string()))
}

/// A file name from the configuration: PgBouncer opens a relative name from its working
/// directory; when nothing is there, the name is taken relative to the file that mentions it,
/// which is what people who write relative names usually mean. `~` is the home directory.
pub fn resolve_path(name: &str, beside: &Path) -> PathBuf {
    let expanded = match name.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map(|h| Path::new(&h).join(rest)),
        None => None,
    };
    let path = expanded.unwrap_or_else(|| PathBuf::from(name));
    if path.is_absolute() {
        return path;
    }
    if let Ok(cwd) = std::env::current_dir() {
        let from_cwd = cwd.join(&path);
        if from_cwd.exists() {
            return from_cwd;
        }
    }
    let beside = if beside.is_relative() {
        std::env::current_dir().map(|cwd| cwd.join(beside)).unwrap_or_else(|_| beside.to_path_buf())
    } else {
        beside.to_path_buf()
    };
    beside.join(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_sections_comments_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let ini = write(
            dir.path(),
            "pgbouncer.ini",
            "; comment\n# another\n[databases]\n  app = host=db1 dbname=app ; not a comment\n\"odd name\"\"x\" = host=db2\n\
             [pgbouncer]\r\nlisten_port=6433\npool_mode = transaction   \nempty =\n",
        );
        let f = read(&ini).unwrap();
        let kv: Vec<_> = f.entries.iter().map(|e| (e.section, e.key.as_str(), e.value.as_str())).collect();
        assert_eq!(
            kv,
            vec![
                (Section::Databases, "app", "host=db1 dbname=app ; not a comment"),
                (Section::Databases, "odd name\"x", "host=db2"),
                (Section::PgBouncer, "listen_port", "6433"),
                (Section::PgBouncer, "pool_mode", "transaction"),
                (Section::PgBouncer, "empty", ""),
            ]
        );
        assert_eq!(f.entries[2].origin.line, 7);
    }

    #[test]
    fn includes_nest_and_carry_the_section() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        write(dir.path(), "conf.d/dbs.ini", "[databases]\nb = host=x\n%include users.ini\n");
        write(dir.path(), "conf.d/users.ini", "[users]\nbob = pool_mode=session\n");
        let ini = write(
            dir.path(),
            "pgbouncer.ini",
            "[pgbouncer]\nlisten_port = 1\n%include conf.d/dbs.ini\nafter = 1\n",
        );
        // users.ini is named relative to conf.d/dbs.ini, the file that includes it.
        let f = read(&ini).unwrap();
        let last = f.entries.last().unwrap();
        // The included file left the section at [users]; PgBouncer keeps it there.
        assert_eq!((last.section, last.key.as_str()), (Section::Users, "after"));
        assert_eq!(f.includes.len(), 2);
        assert!(f.entries.iter().any(|e| e.key == "bob" && e.origin.file.ends_with("conf.d/users.ini")));
    }

    #[test]
    fn a_second_pgbouncer_header_resets_its_settings_as_pgbouncer_does() {
        let dir = tempfile::tempdir().unwrap();
        let ini = write(
            dir.path(),
            "p.ini",
            "[pgbouncer]\npool_mode = transaction\n[pgbouncer]\nlisten_port = 1\n",
        );
        let f = read(&ini).unwrap();
        assert_eq!(f.entries.len(), 1);
        assert_eq!(f.pgbouncer_resets.len(), 1);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(dir.path(), "bad.ini", "[pgbouncer]\nlisten_port 6432\n");
        let e = read(&bad).unwrap_err();
        assert!(e.contains("bad.ini:2") && e.contains("expected '='"), "{e}");
        let sect = write(dir.path(), "sect.ini", "[pgbouncer]\n[nonsense]\n");
        assert!(read(&sect).unwrap_err().contains("invalid section [nonsense]"));
        let none = write(dir.path(), "none.ini", "[databases]\na = host=x\n");
        assert!(read(&none).unwrap_err().contains("no [pgbouncer] section"));
        let missing = write(dir.path(), "inc.ini", "[pgbouncer]\n%include nowhere.ini\n");
        let e = read(&missing).unwrap_err();
        assert!(e.contains("inc.ini:2") && e.contains("nowhere.ini"), "{e}");
        let looped = write(dir.path(), "loop.ini", "[pgbouncer]\n%include loop.ini\n");
        assert!(read(&looped).unwrap_err().contains("nested more than 10"));
    }
}
