use pgpilot_testkit::{Cluster, RedisServer};

#[test]
fn primary_and_replica_stream() {
    let primary = Cluster::start();
    primary.psql("postgres", "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2)");
    let replica = primary.start_replica();
    replica.wait_caught_up(&primary);
    assert_eq!(replica.psql("postgres", "SELECT pg_is_in_recovery()"), "t");
    assert_eq!(replica.psql("postgres", "SELECT sum(x) FROM t"), "3");
    replica.promote();
    replica.psql("postgres", "INSERT INTO t VALUES (3)");
    assert_eq!(replica.psql("postgres", "SELECT sum(x) FROM t"), "6");
}

#[test]
fn restart_keeps_data() {
    let c = Cluster::start();
    c.psql("postgres", "CREATE TABLE t(x int); INSERT INTO t VALUES (7)");
    c.restart();
    assert_eq!(c.psql("postgres", "SELECT x FROM t"), "7");
}

#[test]
fn redis_answers() {
    let r = RedisServer::start();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", r.port())).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"+PONG\r\n");
}

/// redis-server must not share the terminal's process group with the program using the kit: a
/// Ctrl-C there would stop it behind the program's back (the demo then waited 10 s for it).
#[test]
fn redis_runs_in_a_process_group_of_its_own() {
    let r = RedisServer::start();
    let pid = r.pid().expect("running") as libc::pid_t;
    // SAFETY: getpgid and getpgrp only read process attributes.
    let (its_group, our_group) = unsafe { (libc::getpgid(pid), libc::getpgrp()) };
    assert_eq!(its_group, pid, "redis-server leads its own process group");
    assert_ne!(its_group, our_group);
}

#[test]
fn a_port_taken_before_the_server_binds_it_is_replaced_by_a_free_one() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cluster = Cluster::builder().preferred_port(port).start();
    assert_ne!(cluster.port(), port);
    assert_eq!(cluster.psql("postgres", "SELECT 1"), "1");
    assert_eq!(cluster.psql("postgres", "SHOW port"), cluster.port().to_string());
}
