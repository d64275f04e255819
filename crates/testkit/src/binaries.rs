use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup) live.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub dir: PathBuf,
}

impl PgBinaries {
    pub fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Finds the server binaries: `$PGBIN`, then the newest `/usr/lib/postgresql/*/bin`, then `pg_config --bindir`.
pub fn pg_bin_dir() -> Result<PgBinaries, String> {
    static FOUND: OnceLock<Result<PgBinaries, String>> = OnceLock::new();
    FOUND.get_or_init(locate).clone()
}

fn locate() -> Result<PgBinaries, String> {
    if let Ok(dir) = std::env::var("PGBIN") {
        return check(PathBuf::from(dir));
    }
    if let Some(dir) = newest_debian_bin_dir() {
        return check(dir);
    }
    if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            return check(PathBuf::from(dir));
        }
    }
    Err(missing_message())
}

fn newest_debian_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn check(dir: PathBuf) -> Result<PgBinaries, String> {
    // pg_basebackup makes the replicas: without it a primary would start and the replica fail.
    for tool in ["initdb", "pg_ctl", "postgres", "pg_basebackup"] {
        if !Path::new(&dir).join(tool).exists() {
            return Err(format!("{} has no {tool}. {}", dir.display(), missing_message()));
        }
    }
    Ok(PgBinaries { dir })
}

fn missing_message() -> String {
    "PostgreSQL server binaries not found: install them (Debian/Ubuntu: `apt-get install postgresql`) \
     or point PGBIN at the directory holding initdb and pg_ctl"
        .to_string()
}
