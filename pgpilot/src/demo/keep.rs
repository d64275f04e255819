//! `--keep`: after the report everything stays up; this says how to reach it, then waits for
//! Ctrl-C (or SIGTERM), after which the demo tears it all down (see session.rs).

use std::fmt::Write;

use super::stack::StackInfo;

pub fn connection_help(info: &StackInfo, clients: usize) -> String {
    let mut out = String::from("\nEverything keeps running. Connect with:\n");
    let mut line = |what: &str, how: String| {
        let _ = writeln!(out, "  {what:<22}{how}");
    };
    if let Some(gw) = &info.pgpilot {
        line("through pgpilot", format!("psql \"{}\"", gw.url));
        line("admin console", format!("psql \"{}\" -c \"SHOW POOLS\"", gw.admin_url));
        line("dashboard", gw.dashboard.clone());
        line("metrics", gw.metrics.clone());
        if let Some(file) = &gw.config_file {
            line("pgpilot's config", file.display().to_string());
        }
    }
    if let Some(p) = &info.primary {
        line("primary (direct)", format!("psql \"{}\"", p.url));
    }
    if let Some(r) = &info.replica {
        line("replica (direct)", format!("psql \"{}\"", r.url));
    }
    if let Some(redis) = &info.redis {
        line("redis", format!("redis-cli -p {}", redis.port));
    }
    if let (Some(gw), Some(p)) = (&info.pgpilot, &info.primary) {
        line(
            "more load",
            format!(
                "pgpilot bench direct={} pgpilot={} --scenario read-heavy -c {clients} -T 10",
                p.url, gw.url
            ),
        );
    }
    out.push_str("Press Ctrl-C to stop everything and remove its files.\n");
    out
}
