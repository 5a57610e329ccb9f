//! Hostile cases: the guest's view of the world (see the suite's module doc).
//! Files outside a grant, the host's environment and arguments, and network
//! addresses not granted must stay out of a plugin's reach, however it asks.
//!
//! The file cases grant `DIR/data` as `/data` and keep a sentinel file beside
//! it, `DIR/secret.txt`: whatever the guest does, the sentinel's content never
//! reaches a reply and the file is never changed, and no file appears in DIR.

use super::Arena;
use crate::util::{Answer, PluginDir};
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasm_sup_tests::PROBE;

/// The hostile plugin.
const PROBE_NAME: &str = "probe";
/// The sentinel's content: no reply may contain it.
const SECRET: &str = "the host's secret, outside every grant";

/// A probe granted `DIR/data` as `/data` (`mode` `ro` or `rw`), with `f.txt`
/// in it, and the sentinel `DIR/secret.txt` outside the grant.
fn files_dir(mode: &str) -> PluginDir {
    let dir = PluginDir::new();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/f.txt"), "inside").unwrap();
    std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
    dir.plugin(PROBE_NAME, PROBE).config(&format!(
        "[plugins.{PROBE_NAME}]\ndirs = [{{ host = \"data\", guest = \"/data\", mode = \"{mode}\" }}]\n"
    ));
    dir
}

/// Starts the arena on `dir` with the probe's state planted.
async fn arena(dir: PluginDir) -> Arena {
    let mut arena = Arena::start(dir).await;
    arena.plant(PROBE_NAME).await;
    arena
}

/// The plugin directory of an in-process arena.
fn root(arena: &Arena) -> PathBuf {
    arena.dir().expect("in process").path().to_path_buf()
}

/// The sentinel's path.
fn sentinel(arena: &Arena) -> PathBuf {
    root(arena).join("secret.txt")
}

/// The names directly in `dir`.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// `a` is a refusal (the guest's `Err`) that does not carry the secret.
#[track_caller]
fn refused(a: &Answer) {
    assert_eq!(a.status, 422, "not refused: {}", a.text());
    assert!(
        !a.text().contains(SECRET),
        "the secret leaked: {}",
        a.text()
    );
}

/// The sentinel is still a plain file with its content, and DIR holds exactly
/// the names it held before the attack.
#[track_caller]
fn sentinel_intact(arena: &Arena, before: &BTreeSet<String>) {
    let path = sentinel(arena);
    let meta = std::fs::symlink_metadata(&path).expect("the sentinel is still there");
    assert!(meta.file_type().is_file(), "the sentinel was replaced");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), SECRET);
    assert_eq!(
        &names(&root(arena)),
        before,
        "files appeared or went in DIR"
    );
}

/// `..` in a path: reading, writing and listing through `/data/..` (and
/// deeper) fail, the sentinel is unchanged and nothing appears beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotdot_in_a_path_stays_in_the_grant() {
    let mut arena = arena(files_dir("rw")).await;
    let before = names(&root(&arena));
    for path in [
        "/data/../secret.txt",
        "/data/../../secret.txt",
        "/data/./../secret.txt",
        "/data/sub/../../secret.txt",
        "../secret.txt",
        "data/../secret.txt",
    ] {
        refused(&arena.send(PROBE_NAME, format!("read-file {path}")).await);
        refused(
            &arena
                .send(PROBE_NAME, format!("write-file {path} pwned"))
                .await,
        );
    }
    refused(
        &arena
            .send(PROBE_NAME, "write-file /data/../dropped x")
            .await,
    );
    refused(&arena.send(PROBE_NAME, "list-dir /data/..").await);
    // The grant itself still works: the refusals were about the path.
    assert_eq!(
        arena.send(PROBE_NAME, "read-file /data/f.txt").await.ok(),
        "inside"
    );
    sentinel_intact(&arena, &before);
    arena.assert_contained().await;
    arena.stop().await;
}

/// An absolute path outside the grant: the sentinel's host path, `/`, and
/// paths that only exist on the host are neither readable nor writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_path_outside_the_grant_is_refused() {
    let mut arena = arena(files_dir("rw")).await;
    let before = names(&root(&arena));
    let host_path = sentinel(&arena).display().to_string();
    for path in [
        host_path.as_str(),
        "/secret.txt",
        "/etc/passwd",
        "/proc/self/environ",
    ] {
        refused(&arena.send(PROBE_NAME, format!("read-file {path}")).await);
    }
    refused(
        &arena
            .send(PROBE_NAME, format!("write-file {host_path} pwned"))
            .await,
    );
    let dropped = root(&arena).join("dropped").display().to_string();
    refused(
        &arena
            .send(PROBE_NAME, format!("write-file {dropped} x"))
            .await,
    );
    refused(&arena.send(PROBE_NAME, "list-dir /").await);
    sentinel_intact(&arena, &before);
    arena.assert_contained().await;
    arena.stop().await;
}

/// An absolute symlink inside the grant pointing out (made by the host's
/// operator, here the test): reading and writing through it fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_symlink_in_the_grant_does_not_lead_out() {
    let dir = files_dir("rw");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), dir.path().join("data/abs")).unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("data/root")).unwrap();
    let mut arena = arena(dir).await;
    let before = names(&root(&arena));
    refused(&arena.send(PROBE_NAME, "read-file /data/abs").await);
    refused(
        &arena
            .send(PROBE_NAME, "read-file /data/root/secret.txt")
            .await,
    );
    refused(&arena.send(PROBE_NAME, "list-dir /data/root").await);
    refused(&arena.send(PROBE_NAME, "write-file /data/abs pwned").await);
    refused(
        &arena
            .send(PROBE_NAME, "write-file /data/root/secret.txt pwned")
            .await,
    );
    refused(
        &arena
            .send(PROBE_NAME, "write-file /data/root/dropped x")
            .await,
    );
    sentinel_intact(&arena, &before);
    arena.assert_contained().await;
    arena.stop().await;
}

/// A relative symlink `../secret.txt` inside the grant: reading through it
/// fails (and the link is still there for the next case to try writing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_symlink_out_of_the_grant_is_not_followed() {
    let dir = files_dir("rw");
    std::os::unix::fs::symlink("../secret.txt", dir.path().join("data/rel")).unwrap();
    std::os::unix::fs::symlink("..", dir.path().join("data/up")).unwrap();
    let mut arena = arena(dir).await;
    let before = names(&root(&arena));
    refused(&arena.send(PROBE_NAME, "read-file /data/rel").await);
    refused(
        &arena
            .send(PROBE_NAME, "read-file /data/up/secret.txt")
            .await,
    );
    refused(&arena.send(PROBE_NAME, "list-dir /data/up").await);
    sentinel_intact(&arena, &before);
    arena.assert_contained().await;
    arena.stop().await;
}

/// A write through symlinks pointing out of a read-write grant (relative and
/// absolute, to the sentinel and to a directory outside): it fails, the
/// sentinel keeps its content and no file is created outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_a_symlink_out_of_the_grant_fails() {
    let dir = files_dir("rw");
    std::os::unix::fs::symlink("../secret.txt", dir.path().join("data/rel")).unwrap();
    std::os::unix::fs::symlink("..", dir.path().join("data/up")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), dir.path().join("data/abs")).unwrap();
    // A dangling link whose target would be created outside by a write.
    std::os::unix::fs::symlink("../created.txt", dir.path().join("data/dangling")).unwrap();
    let mut arena = arena(dir).await;
    let before = names(&root(&arena));
    for path in [
        "/data/rel",
        "/data/abs",
        "/data/up/secret.txt",
        "/data/up/created.txt",
        "/data/dangling",
    ] {
        refused(
            &arena
                .send(PROBE_NAME, format!("write-file {path} pwned"))
                .await,
        );
    }
    assert!(!root(&arena).join("created.txt").exists());
    sentinel_intact(&arena, &before);
    arena.assert_contained().await;
    arena.stop().await;
}

/// Renames out of the grant (through `..`, to an absolute path outside, to
/// the host path of DIR) and into it (the sentinel, to steal it) all fail:
/// the file stays where it was and the sentinel too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_across_the_grants_edge_fails() {
    let mut arena = arena(files_dir("rw")).await;
    let before = names(&root(&arena));
    let outside = root(&arena).join("moved.txt").display().to_string();
    for to in ["/data/../moved.txt", "/moved.txt", outside.as_str()] {
        refused(
            &arena
                .send(PROBE_NAME, format!("rename /data/f.txt {to}"))
                .await,
        );
    }
    refused(
        &arena
            .send(PROBE_NAME, "rename /data/../secret.txt /data/stolen.txt")
            .await,
    );
    refused(
        &arena
            .send(PROBE_NAME, "rename /data/../secret.txt /data/../gone.txt")
            .await,
    );
    assert_eq!(
        std::fs::read_to_string(root(&arena).join("data/f.txt")).unwrap(),
        "inside"
    );
    assert!(!root(&arena).join("data/stolen.txt").exists());
    // A rename inside the grant works: the refusals were about the edge.
    assert_eq!(
        arena
            .send(PROBE_NAME, "rename /data/f.txt /data/g.txt")
            .await
            .ok(),
        "ok"
    );
    assert!(root(&arena).join("data/g.txt").exists());
    sentinel_intact(&arena, &before);
    arena.assert_contained().await;
    arena.stop().await;
}

/// A read-only grant: writing, creating, renaming, deleting by rename and
/// making a symlink in it all fail; its file keeps its content and no new
/// entry appears in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_grant_cannot_be_written() {
    let mut arena = arena(files_dir("ro")).await;
    let data = root(&arena).join("data");
    let before = names(&data);
    assert_eq!(
        arena.send(PROBE_NAME, "read-file /data/f.txt").await.ok(),
        "inside"
    );
    refused(&arena.send(PROBE_NAME, "write-file /data/f.txt pwned").await);
    refused(&arena.send(PROBE_NAME, "write-file /data/new.txt x").await);
    refused(
        &arena
            .send(PROBE_NAME, "rename /data/f.txt /data/g.txt")
            .await,
    );
    refused(&arena.send(PROBE_NAME, "symlink f.txt /data/link").await);
    assert_eq!(
        std::fs::read_to_string(data.join("f.txt")).unwrap(),
        "inside"
    );
    assert_eq!(names(&data), before, "the read-only grant changed");
    arena.assert_contained().await;
    arena.stop().await;
}

/// Symlinks the guest makes itself in a read-write grant, pointing out.
/// Making one may be refused (wasmtime refuses absolute targets, and nothing
/// is created then) or allowed (it makes relative ones, `../secret.txt` and
/// `..`, as on the host); nothing reads, writes, lists or renames through
/// one that was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_the_guest_makes_does_not_lead_out() {
    let mut arena = arena(files_dir("rw")).await;
    let before = names(&root(&arena));
    let data = root(&arena).join("data");
    let host_path = sentinel(&arena).display().to_string();
    let mut made = Vec::new();
    for (target, link) in [
        ("../secret.txt", "rel"),
        ("..", "up"),
        (host_path.as_str(), "abs"),
        ("/", "slash"),
    ] {
        let a = arena
            .send(PROBE_NAME, format!("symlink {target} /data/{link}"))
            .await;
        let on_host = std::fs::symlink_metadata(data.join(link));
        match a.status {
            200 => {
                assert!(on_host.unwrap().file_type().is_symlink(), "{link}");
                made.push(link);
            }
            _ => {
                refused(&a);
                assert!(on_host.is_err(), "the refused symlink {link} exists");
            }
        }
    }
    // What wasmtime does today; a change is worth a look, not a failure of
    // containment by itself.
    assert_eq!(made, ["rel", "up"], "which outward symlinks could be made");
    for link in made {
        for path in [format!("/data/{link}"), format!("/data/{link}/secret.txt")] {
            refused(&arena.send(PROBE_NAME, format!("read-file {path}")).await);
            refused(
                &arena
                    .send(PROBE_NAME, format!("write-file {path} pwned"))
                    .await,
            );
        }
        refused(
            &arena
                .send(PROBE_NAME, format!("list-dir /data/{link}"))
                .await,
        );
        refused(
            &arena
                .send(PROBE_NAME, format!("write-file /data/{link}/dropped x"))
                .await,
        );
        refused(
            &arena
                .send(
                    PROBE_NAME,
                    format!("rename /data/f.txt /data/{link}/moved.txt"),
                )
                .await,
        );
    }
    sentinel_intact(&arena, &before);
    arena.assert_contained().await;
    arena.stop().await;
}

/// No grant at all: no path, relative or absolute, can be read, written or
/// listed, not even `/` or `.`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grant_there_is_no_filesystem() {
    let dir = PluginDir::new();
    std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
    dir.plugin(PROBE_NAME, PROBE);
    let mut arena = arena(dir).await;
    let before = names(&root(&arena));
    let host_path = sentinel(&arena).display().to_string();
    for path in [
        host_path.as_str(),
        "secret.txt",
        "/secret.txt",
        "./secret.txt",
    ] {
        refused(&arena.send(PROBE_NAME, format!("read-file {path}")).await);
        refused(
            &arena
                .send(PROBE_NAME, format!("write-file {path} pwned"))
                .await,
        );
    }
    for path in ["/", ".", "/tmp"] {
        refused(&arena.send(PROBE_NAME, format!("list-dir {path}")).await);
    }
    refused(&arena.send(PROBE_NAME, "write-file dropped x").await);
    refused(&arena.send(PROBE_NAME, "symlink secret.txt link").await);
    sentinel_intact(&arena, &before);
    arena.assert_contained().await;
    arena.stop().await;
}

/// The test process's own environment variables (names that are valid UTF-8
/// and hold no space).
fn host_env_names() -> Vec<String> {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| !k.is_empty() && !k.contains(' '))
        .collect();
    assert!(
        names.iter().any(|k| k == "PATH"),
        "the test process has no PATH to hide"
    );
    names
}

/// Without `env`: none of the host's environment (HOME, PATH and every other
/// variable the test process has) is visible, and there are no variables and
/// no arguments at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_environment_is_invisible() {
    let dir = PluginDir::new();
    dir.plugin(PROBE_NAME, PROBE);
    let mut arena = arena(dir).await;
    for name in ["HOME", "PATH", "USER", "PWD", "RUST_LOG"]
        .into_iter()
        .map(str::to_string)
        .chain(host_env_names())
    {
        let a = arena.send(PROBE_NAME, format!("env {name}")).await;
        assert_eq!((a.status, a.text()), (422, "not set".to_string()), "{name}");
    }
    assert_eq!(arena.send(PROBE_NAME, "env-count").await.ok(), "0");
    assert_eq!(arena.send(PROBE_NAME, "args-count").await.ok(), "0");
    arena.assert_contained().await;
    arena.stop().await;
}

/// With `env` granting two variables: the guest sees exactly those two (with
/// their values, one of them named like a host variable and shadowing it),
/// nothing of the host's, and no arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_is_exactly_what_is_granted() {
    let dir = PluginDir::new();
    dir.plugin(PROBE_NAME, PROBE).config(&format!(
        "[plugins.{PROBE_NAME}]\nenv = {{ GRANTED = \"yes\", HOME = \"/granted-home\" }}\n"
    ));
    let mut arena = arena(dir).await;
    assert_eq!(arena.send(PROBE_NAME, "env GRANTED").await.ok(), "yes");
    assert_eq!(
        arena.send(PROBE_NAME, "env HOME").await.ok(),
        "/granted-home"
    );
    for name in host_env_names().into_iter().filter(|n| n != "HOME") {
        let a = arena.send(PROBE_NAME, format!("env {name}")).await;
        assert_eq!((a.status, a.text()), (422, "not set".to_string()), "{name}");
    }
    assert_eq!(arena.send(PROBE_NAME, "env-count").await.ok(), "2");
    assert_eq!(arena.send(PROBE_NAME, "args-count").await.ok(), "0");
    arena.assert_contained().await;
    arena.stop().await;
}

/// A loopback TCP listener the test owns, non-blocking, for counting what
/// reaches it.
fn tcp_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// `l` has no connection waiting.
#[track_caller]
fn accepted_nothing(l: &TcpListener) {
    match l.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the listener saw a connection: {other:?}"),
    }
}

/// `l` gets a connection within a few seconds.
fn accepts_one(l: &TcpListener) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match l.accept() {
            Ok(_) => return,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "the granted connection never arrived"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A loopback UDP socket the test owns, reading with a short timeout.
fn udp_socket() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let addr = s.local_addr().unwrap();
    (s, addr)
}

/// What `s` receives next, if anything within its timeout.
fn received(s: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 1500];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv: {e}"),
    }
}

/// No network grant: a TCP connect to a live loopback listener the test owns
/// fails (and the listener accepts nothing), as do a listen and a UDP send
/// to a live socket (which receives nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grant_there_is_no_network() {
    let (listener, addr) = tcp_listener();
    let (udp, udp_addr) = udp_socket();
    let dir = PluginDir::new();
    dir.plugin(PROBE_NAME, PROBE);
    let mut arena = arena(dir).await;
    refused(&arena.send(PROBE_NAME, format!("connect {addr}")).await);
    refused(&arena.send(PROBE_NAME, "connect localhost:80").await);
    refused(&arena.send(PROBE_NAME, "listen 127.0.0.1:0").await);
    refused(&arena.send(PROBE_NAME, "listen 0.0.0.0:0").await);
    refused(
        &arena
            .send(PROBE_NAME, format!("udp-send {udp_addr} leaked"))
            .await,
    );
    accepted_nothing(&listener);
    assert_eq!(received(&udp), None, "the UDP socket got a datagram");
    arena.assert_contained().await;
    arena.stop().await;
}

/// The probe with a network grant for 127.0.0.1:`port` only.
async fn granted_port(port: u16) -> Arena {
    let dir = PluginDir::new();
    dir.plugin(PROBE_NAME, PROBE).config(&format!(
        "[plugins.{PROBE_NAME}]\nnetwork = [\"127.0.0.1:{port}\"]\n"
    ));
    arena(dir).await
}

/// A grant for one port: a connect to another live port fails and its
/// listener sees nothing, while the granted one connects and is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_for_one_port_opens_only_that_port() {
    let (granted, granted_addr) = tcp_listener();
    let (other, other_addr) = tcp_listener();
    let mut arena = granted_port(granted_addr.port()).await;
    refused(
        &arena
            .send(PROBE_NAME, format!("connect {other_addr}"))
            .await,
    );
    // The same port on another loopback address is another address.
    refused(
        &arena
            .send(
                PROBE_NAME,
                format!("connect 127.0.0.2:{}", granted_addr.port()),
            )
            .await,
    );
    accepted_nothing(&other);
    accepted_nothing(&granted);
    assert_eq!(
        arena
            .send(PROBE_NAME, format!("connect {granted_addr}"))
            .await
            .ok(),
        "connected"
    );
    accepts_one(&granted);
    accepted_nothing(&other);
    arena.assert_contained().await;
    arena.stop().await;
}

/// With a grant to connect to one port, listening is refused: on another
/// loopback port (nothing answers there afterwards), on port 0, and on the
/// unspecified address (the implicit-bind exception of connect must not
/// open a listener on every interface).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_is_refused_when_not_granted() {
    let (_granted, granted_addr) = tcp_listener();
    let mut arena = granted_port(granted_addr.port()).await;
    let port = crate::util::free_port();
    refused(&arena.send(PROBE_NAME, format!("listen {port}")).await);
    assert!(
        TcpStream::connect_timeout(&port, Duration::from_secs(1)).is_err(),
        "something listens on {port}"
    );
    for addr in ["127.0.0.1:0", "0.0.0.0:0", "[::]:0"] {
        refused(&arena.send(PROBE_NAME, format!("listen {addr}")).await);
    }
    arena.assert_contained().await;
    arena.stop().await;
}

/// UDP with a grant for one port: a datagram to a port not granted is
/// refused and that socket receives nothing, while the granted one receives
/// it. (std's `UdpSocket` binds the unspecified address first, which the
/// grant allows, then `send_to`, which is what is checked.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_send_to_a_port_not_granted_is_refused() {
    let (granted, granted_addr) = udp_socket();
    let (other, other_addr) = udp_socket();
    let mut arena = granted_port(granted_addr.port()).await;
    refused(
        &arena
            .send(PROBE_NAME, format!("udp-send {other_addr} leaked"))
            .await,
    );
    assert_eq!(
        received(&other),
        None,
        "the socket not granted got a datagram"
    );
    assert_eq!(
        arena
            .send(PROBE_NAME, format!("udp-send {granted_addr} hello"))
            .await
            .ok(),
        "sent 5"
    );
    assert_eq!(received(&granted).as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        received(&other),
        None,
        "the socket not granted got a datagram"
    );
    arena.assert_contained().await;
    arena.stop().await;
}
