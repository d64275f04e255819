use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::run::or_panic;
use crate::scratch::{self, new_owned_dir, REDIS_PID_FILE, REDIS_PREFIX};

/// A redis-server on a loopback port, without persistence, killed on drop.
pub struct RedisServer {
    port: u16,
    /// Started as a node of a Redis Cluster.
    cluster: bool,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts redis-server; panics naming the package to install when it is missing.
    pub fn start() -> RedisServer {
        RedisServer::start_node(false)
    }

    fn start_node(cluster: bool) -> RedisServer {
        scratch::sweep_once();
        let mut server =
            RedisServer { port: free_port(), cluster, child: None, _dir: new_owned_dir(REDIS_PREFIX) };
        server.spawn();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs (to check it is gone after a teardown).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's working directory, removed on drop.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Stops the server (as a crash would: no save).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port after [`RedisServer::stop`].
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            // A group of its own, as the PostgreSQL servers have: a Ctrl-C on the terminal reaches
            // only the program using the kit, which decides when Redis stops. In the terminal's
            // group, redis-server quit on it during startup and the wait below ran out (10 s).
            .process_group(0)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .args(if self.cluster { &["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"][..] } else { &[] })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server could not be started ({e}): install it (Debian/Ubuntu: `apt-get install redis-server`)")
            });
        // For the sweep of a directory whose owner was killed (see scratch.rs).
        let pid_file = self._dir.path().join(REDIS_PID_FILE);
        let written = std::fs::write(&pid_file, child.id().to_string());
        self.child = Some(child);
        or_panic(written, format_args!("writing {}", pid_file.display()));
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!("redis-server exited ({status}) before listening on port {}", self.port);
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!("redis-server did not listen on port {} within 10 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of nodes on loopback ports, every slot assigned, no replicas; killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` (at least 3) nodes and joins them with `redis-cli --cluster create`.
    pub fn start(n: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..n.max(3)).map(|_| RedisServer::start_node(true)).collect();
        let addresses: Vec<String> = nodes.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("redis-cli could not be run ({e}): install redis-tools"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Every node says `cluster_state:ok`.
    fn wait_ok(&self) {
        let start = Instant::now();
        for node in &self.nodes {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &node.port.to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(20), "Redis Cluster not ready: {info}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// A URL of one node, which is enough for a cluster client to find the others.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }
}
