//! The driver compatibility suite (issue 3): real drivers through a real `pgpilot serve` process
//! in transaction pooling mode, pool of 5, 50 concurrent clients, each checking what it reads.
//!
//! Every test starts its own cluster and gateway. The driver programs live in drivers/ (see
//! docs/drivers.md); their runtimes come from scripts/install-driver-deps.sh, and a missing one
//! fails the test with that name, never skips it. `DRIVERS_TARGET=session` or `direct` runs the
//! same programs through session pooling or straight at PostgreSQL.

#[path = "drivers/harness.rs"]
mod harness;
#[path = "drivers/tokio_postgres_scenario.rs"]
mod tokio_postgres_scenario;
#[path = "drivers/values.rs"]
mod values;

use std::path::Path;
use std::process::Command;

use harness::{repo_root, require, require_path, run_with_limit, scratch_dir, Gateway, Stage, INSTALL_HINT};
use pgpilot_testkit::{pg_bin_dir, Cluster};

const CLIENTS: usize = 50;
const ROUNDS: usize = 30;

/// `$PYTHON`, else the virtualenv the install script makes, else `python3` from PATH.
fn python() -> String {
    if let Ok(python) = std::env::var("PYTHON") {
        return python;
    }
    let venv = repo_root().join("drivers/python/.venv/bin/python");
    if venv.exists() {
        return venv.display().to_string();
    }
    "python3".to_string()
}

fn python_scenario(driver: &str, module: &str, script: &str) {
    let version = require(
        driver,
        &format!("Python 3 with {module}"),
        Command::new(python()).args(["-c", &format!("import {module}; print({module}.__version__)")]),
    );
    eprintln!("{driver}: {module} {version}");
    let stage = Stage::new();
    let mut command = Command::new(python());
    command.arg(script).current_dir(repo_root().join("drivers/python"));
    stage.run_program(driver, command);
}

#[test]
fn python_psycopg() {
    python_scenario("psycopg", "psycopg", "psycopg_scenario.py");
}

#[test]
fn python_asyncpg() {
    python_scenario("asyncpg", "asyncpg", "asyncpg_scenario.py");
}

#[test]
fn node_pg() {
    let dir = repo_root().join("drivers/node");
    require("node-postgres", "Node.js", Command::new("node").arg("--version"));
    for package in ["pg", "pg-copy-streams"] {
        require_path(
            "node-postgres",
            &format!("the npm package {package}"),
            &dir.join("node_modules").join(package),
        );
    }
    let stage = Stage::new();
    let mut command = Command::new("node");
    command.arg("scenario.js").current_dir(&dir);
    stage.run_program("node-postgres", command);
}

#[test]
fn java_jdbc() {
    let jar = Path::new("/usr/share/java/postgresql.jar");
    require("pgJDBC", "the JDK (javac)", Command::new("javac").arg("-version"));
    require_path("pgJDBC", "Debian's libpostgresql-jdbc-java", jar);
    let classes = scratch_dir("drivers-java");
    let source = repo_root().join("drivers/java/DriverScenario.java");
    let mut javac = Command::new("javac");
    javac.args(["-encoding", "UTF-8", "-cp"]).arg(jar).arg("-d").arg(&classes).arg(&source);
    compile("pgJDBC", javac);
    let stage = Stage::new();
    let mut command = Command::new("java");
    command
        .current_dir(repo_root())
        .arg("-cp")
        .arg(format!("{}:{}", classes.display(), jar.display()))
        .arg("DriverScenario");
    stage.run_program("pgJDBC", command);
}

/// Debian packages pgx v4 (golang-github-jackc-pgx-v4-dev) under /usr/share/gocode; the Go module
/// proxy is out of reach here, so the program builds in GOPATH mode against those sources.
const GOPATH: &str = "/usr/share/gocode";

#[test]
fn go_pgx() {
    require("pgx", "Go (golang-go)", Command::new("go").arg("version"));
    require_path(
        "pgx",
        "Debian's golang-github-jackc-pgx-v4-dev",
        &Path::new(GOPATH).join("src/github.com/jackc/pgx/v4"),
    );
    let binary = scratch_dir("drivers-go").join("driver-pgx");
    let mut build = Command::new("go");
    build
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(repo_root().join("drivers/go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOFLAGS", "");
    compile("pgx", build);
    let stage = Stage::new();
    let mut command = Command::new(binary);
    command.current_dir(repo_root());
    stage.run_program("pgx", command);
}

fn compile(driver: &str, mut command: Command) {
    let output = run_with_limit(&mut command, std::time::Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{driver}: could not run {command:?}: {e}. {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "{driver}: building the scenario program failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn rust_tokio_postgres() {
    let stage = Stage::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let outcome = runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(150),
            tokio_postgres_scenario::run("127.0.0.1", stage.port(), CLIENTS, ROUNDS),
        )
        .await
        .unwrap_or_else(|_| Err("tokio-postgres: the scenario did not finish within 150 s".into()))
    });
    match outcome {
        Ok(summary) => println!("{:?}: {summary}", stage.target),
        Err(failures) => {
            let log = stage.gateway.as_ref().map(Gateway::log_tail).unwrap_or_default();
            panic!("tokio-postgres scenario failed against {:?}:\n{failures}\n{log}", stage.target)
        }
    }
}

/// Issue 3, item 4: pgbench's prepared mode (named statements, parsed once per connection)
/// through transaction pooling, with more clients than server connections.
#[test]
fn pgbench_prepared_through_transaction_pooling() {
    let bins = pg_bin_dir().unwrap_or_else(|e| panic!("{e}"));
    let cluster = Cluster::start();
    let pgbench = |port: u16, args: &[&str]| {
        let mut command = Command::new(bins.tool("pgbench"));
        command
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres");
        run_with_limit(&mut command, std::time::Duration::from_secs(60)).expect("running pgbench")
    };
    let init = pgbench(cluster.port(), &["-i", "-q", "-s", "1"]);
    assert!(init.status.success(), "pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
    let gateway = Gateway::start(&cluster, "transaction");
    let run = pgbench(gateway.port(), &["-M", "prepared", "-c", "20", "-j", "2", "-t", "200", "-n"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let report = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n{}", gateway.log_tail());
    assert!(run.status.success(), "pgbench -M prepared through pgpilot failed ({}):\n{report}", run.status);
    assert!(
        stdout.contains("number of transactions actually processed: 4000/4000"),
        "not every transaction was processed:\n{report}"
    );
    assert!(stdout.contains("number of failed transactions: 0 "), "some transactions failed:\n{report}");
    let tps = stdout.lines().find(|l| l.starts_with("tps")).unwrap_or("no tps line");
    println!("pgbench -M prepared -c 20 -j 2 -t 200 through pgpilot (transaction, pool 5): {tps}");
}
