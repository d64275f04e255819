//! sslmode as libpq means it: `require` encrypts without checking the certificate,
//! `verify-full` refuses a self-signed one.

use std::process::Command;

use pgpilot_advisor::Target;
use pgpilot_testkit::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn require_encrypts_and_verify_full_checks_the_certificate() {
    let dir = tempfile::Builder::new().prefix("pgpilot-advisor-tls-").tempdir_in("/tmp").unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (crt, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    Command::new("chmod").arg("755").arg(dir.path()).status().unwrap();
    Command::new("chmod").arg("600").arg(&key).status().unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Command::new("chown").arg("-R").arg("postgres:").arg(dir.path()).status().unwrap();
    }
    let cluster = Cluster::builder()
        .setting("ssl = on")
        .setting(&format!("ssl_cert_file = '{}'", crt.display()))
        .setting(&format!("ssl_key_file = '{}'", key.display()))
        .start();

    let url = format!("{}?sslmode=require", cluster.admin_url());
    let client = Target::parse(&url).unwrap().connect().await.unwrap();
    let row =
        client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0), "sslmode=require must encrypt");

    let strict = format!("postgres://postgres@localhost:{}/postgres?sslmode=verify-full", cluster.port());
    let Err(err) = Target::parse(&strict).unwrap().connect().await else {
        panic!("a self-signed certificate must be refused");
    };
    assert!(format!("{err:#}").contains("certificate"), "{err:#}");
}
