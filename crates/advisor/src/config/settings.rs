//! Current settings against PGTune's recommendations.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::pgtune::{recommend, TuneInput, Value};
use crate::db::Db;
use crate::report::{Category, Finding, Severity};

/// One setting that differs from the recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingAdvice {
    pub name: String,
    pub current: String,
    pub recommended: String,
    pub severity: Severity,
    /// A server restart is needed for the change (context = postmaster).
    pub restart: bool,
}

/// A current setting read from pg_settings, normalized: memory in kB, numbers as numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    pub name: String,
    pub display: String,
    pub value: Option<f64>,
    pub restart: bool,
}

/// The memory multiplier (to kB) of a pg_settings unit.
fn unit_kb(unit: &str) -> Option<f64> {
    match unit {
        "B" => Some(1.0 / 1024.0),
        "kB" => Some(1.0),
        "8kB" => Some(8.0),
        "16kB" => Some(16.0),
        "32kB" => Some(32.0),
        "MB" => Some(1024.0),
        "16MB" => Some(16.0 * 1024.0),
        "GB" => Some(1024.0 * 1024.0),
        _ => None,
    }
}

pub async fn current(db: &Db, names: &[&str]) -> Result<Vec<Current>> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let rows = db
        .client
        .query(
            "SELECT name, setting, coalesce(unit, ''), context, vartype FROM pg_settings WHERE name = ANY($1)",
            &[&names],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (name, setting, unit): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let number: Option<f64> = setting.parse().ok();
            let value = match (number, unit_kb(&unit)) {
                (Some(n), Some(k)) if n >= 0.0 => Some(n * k),
                (n, _) => n,
            };
            let display = match (value, unit_kb(&unit)) {
                (Some(kb), Some(_)) => Value::Memory(kb.round() as u64).render(),
                _ => setting.clone(),
            };
            Current { name, display, value, restart: r.get::<_, String>(3) == "postmaster" }
        })
        .collect())
}

/// Compares; a memory or count setting is off when more than 2× away (a warning when 4× away for
/// the memory settings that matter most), a cost setting when more than 25% away.
pub fn compare(recommended: &[(&'static str, Value)], current: &[Current]) -> Vec<SettingAdvice> {
    let mut out = Vec::new();
    for (name, rec) in recommended {
        let Some(cur) = current.iter().find(|c| c.name == *name) else { continue };
        let (differs, far) = match (rec, cur.value) {
            (Value::Memory(kb), Some(v)) => {
                let ratio = v / (*kb as f64).max(1.0);
                (!(0.5..=2.0).contains(&ratio), !(0.25..=4.0).contains(&ratio))
            }
            (Value::Number(n), Some(v))
                if matches!(*name, "random_page_cost" | "checkpoint_completion_target") =>
            {
                ((v - n).abs() / n > 0.25, false)
            }
            (Value::Number(n), Some(v)) => {
                let ratio = v / n.max(1.0);
                (!(0.5..=2.0).contains(&ratio), false)
            }
            (Value::Text(t), _) => (cur.display != *t, false),
            _ => (false, false),
        };
        // max_worker_processes is a pool that logical replication and extensions' background
        // workers draw from too, not only parallel queries: a higher value is never advice to
        // lower (helper-152: 8 -> 2 for 2 CPUs).
        let lowers_a_floor = *name == "max_worker_processes"
            && matches!((rec, cur.value), (Value::Number(n), Some(v)) if v > *n);
        if !differs || lowers_a_floor {
            continue;
        }
        let important =
            matches!(*name, "shared_buffers" | "work_mem" | "effective_cache_size" | "maintenance_work_mem");
        out.push(SettingAdvice {
            name: name.to_string(),
            current: cur.display.clone(),
            recommended: rec.render(),
            severity: if far && important { Severity::Warning } else { Severity::Info },
            restart: cur.restart,
        });
    }
    out
}

pub async fn advise(db: &Db, input: &TuneInput) -> Result<(Vec<SettingAdvice>, Option<Finding>)> {
    let recommended = recommend(input);
    let names: Vec<&str> = recommended.iter().map(|(n, _)| *n).collect();
    let current = current(db, &names).await?;
    // max_connections is an input here (the current value), not advice.
    let advice: Vec<SettingAdvice> =
        compare(&recommended, &current).into_iter().filter(|a| a.name != "max_connections").collect();
    if advice.is_empty() {
        return Ok((advice, None));
    }
    let severity = advice.iter().map(|a| a.severity).max().unwrap_or(Severity::Info);
    let mut f = Finding::new(
        severity,
        Category::Configuration,
        format!("{} settings differ from the recommendation for this machine", advice.len()),
    );
    let mut fix = String::new();
    for a in &advice {
        f = f.evidence(format!(
            "{}: {} (recommended {}{})",
            a.name,
            a.current,
            a.recommended,
            if a.restart { ", needs restart" } else { "" }
        ));
        fix.push_str(&format!("ALTER SYSTEM SET {} = '{}';\n", a.name, a.recommended));
    }
    fix.push_str(if advice.iter().any(|a| a.restart) {
        "-- then restart PostgreSQL (some settings need it); others: SELECT pg_reload_conf();"
    } else {
        "SELECT pg_reload_conf();"
    });
    Ok((advice, Some(f.fix(fix))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(name: &str, value: f64, display: &str) -> Current {
        Current {
            name: name.into(),
            display: display.into(),
            value: Some(value),
            restart: name == "shared_buffers",
        }
    }

    #[test]
    fn default_shared_buffers_on_a_big_machine_is_a_warning() {
        let rec = vec![
            ("shared_buffers", Value::Memory(4 * 1024 * 1024)),
            ("random_page_cost", Value::Number(1.1)),
        ];
        let current = vec![cur("shared_buffers", 131072.0, "128MB"), cur("random_page_cost", 4.0, "4")];
        let advice = compare(&rec, &current);
        assert_eq!(advice.len(), 2);
        assert_eq!(advice[0].severity, Severity::Warning);
        assert_eq!(advice[0].recommended, "4GB");
        assert!(advice[0].restart);
        assert_eq!(advice[1].severity, Severity::Info);
    }

    #[test]
    fn max_worker_processes_is_only_ever_raised() {
        let rec = vec![("max_worker_processes", Value::Number(2.0))];
        assert!(compare(&rec, &[cur("max_worker_processes", 8.0, "8")]).is_empty());
        let rec = vec![("max_worker_processes", Value::Number(16.0))];
        let advice = compare(&rec, &[cur("max_worker_processes", 4.0, "4")]);
        assert_eq!(advice.len(), 1);
        assert_eq!(advice[0].recommended, "16");
    }

    #[test]
    fn close_enough_is_left_alone() {
        let rec =
            vec![("work_mem", Value::Memory(4096)), ("checkpoint_completion_target", Value::Number(0.9))];
        let current =
            vec![cur("work_mem", 6000.0, "6000kB"), cur("checkpoint_completion_target", 0.9, "0.9")];
        assert!(compare(&rec, &current).is_empty());
    }
}
