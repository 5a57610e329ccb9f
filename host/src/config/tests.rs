//! Configuration tests. Bad files live in `host/tests/fixtures/config/invalid/`,
//! each with the exact error expected in a `.err` file beside it (regenerate
//! with `UPDATE_SNAPSHOTS=1 cargo test -p wasm-sup config::`, then review).

use super::*;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

fn load_str(toml: &str) -> (tempfile::TempDir, Result<Config>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(HOST_CONFIG_FILE), toml).unwrap();
    let c = Config::load(dir.path(), &HostOverrides::default());
    (dir, c)
}

#[test]
fn empty_directory_gives_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(dir.path(), &HostOverrides::default()).unwrap();
    let p = c.plugin("x").unwrap();
    assert_eq!(p.memory, 64 << 20);
    assert_eq!(p.fuel, Some(1_000_000_000));
    assert_eq!(p.timeout, Duration::from_secs(5));
    assert_eq!(p.network, NetworkGrant::Denied);
    assert!(p.dirs.is_empty() && p.env.is_empty() && p.config.is_empty());
    assert_eq!(p.restart, default_restart());
    assert_eq!(c.host.admin.to_string(), DEFAULT_ADMIN_ADDR);
    assert_eq!(c.host.coredumps, None, "coredumps are off by default");
    assert_eq!(c.host.compile_cache, Some(1 << 30));
    assert!(c.host.watch);
    assert_eq!(
        c.host.state,
        StateLocation::Redb(dir.path().join(".wasm-sup/state.redb"))
    );
}

#[test]
fn documented_defaults_are_the_defaults() {
    let src = std::fs::read_to_string(fixtures().join("defaults.toml")).unwrap();
    let (_d, documented) = load_str(&src);
    let (_e, empty) = load_str("");
    assert_eq!(
        documented.unwrap().plugin("x").unwrap(),
        empty.unwrap().plugin("x").unwrap()
    );
}

#[test]
fn every_key_parses_and_layers_win_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("full.toml"),
        dir.path().join(HOST_CONFIG_FILE),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("counter.toml"),
        "timeout = \"7s\"\nconfig = { n = 4 }\n",
    )
    .unwrap();
    let c = Config::load(dir.path(), &HostOverrides::default()).unwrap();
    assert_eq!(
        c.host.state,
        StateLocation::Redb(dir.path().join("state/wasm-sup.redb"))
    );
    assert_eq!(c.host.admin.port(), 9999);
    assert_eq!(
        (c.host.max_restarts, c.host.window),
        (50, Duration::from_secs(120))
    );
    assert_eq!((c.host.crash_reports, c.host.dead_letters), (20, 30));
    assert_eq!(c.host.coredumps, Some(64 << 20));
    assert_eq!(c.host.coredump_dir, dir.path().join("state/coredumps"));
    assert_eq!(c.host.compile_cache, None);
    assert_eq!(c.host.cache_dir, dir.path().join("state/cache"));
    assert!(!c.host.watch);
    let p = c.plugin("counter").unwrap();
    // NAME.toml > [plugins.NAME] > [defaults].
    assert_eq!(p.timeout, Duration::from_secs(7));
    assert_eq!(p.memory, 16 << 20);
    assert_eq!(p.fuel, None, "fuel = 0 is unmetered, from [defaults]");
    // config and env merge by key.
    let cfg: Vec<(&str, &str)> = p
        .config
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        cfg,
        [
            ("greeting", "hello"),
            ("n", "4"),
            ("on", "true"),
            ("shared", "counter")
        ]
    );
    assert_eq!(p.env.get("LANG").map(String::as_str), Some("C"));
    assert_eq!(p.dirs[0].host, dir.path().join("data/counter"));
    assert_eq!(p.dirs[0].mode, DirMode::Rw);
    let allow = |s: &str| p.network.allows(&s.parse().unwrap());
    assert!(allow("127.0.0.1:6379") && allow("[::1]:80") && allow("10.0.0.1:443"));
    assert!(!allow("127.0.0.2:6379") && !allow("10.0.0.1:80"));
    assert_eq!(p.tick, Some(Duration::from_secs(1)));
    let r = &p.restart;
    assert_eq!(
        (r.kind, r.backoff),
        (RestartType::Transient, BackoffKind::Fixed)
    );
    assert_eq!(
        r.initial,
        Duration::from_millis(250),
        "from [defaults.restart]"
    );
    assert_eq!(
        (r.max_restarts, r.max_attempts.get(), r.cooldown),
        (2, 3, None)
    );
    assert_eq!(p.health.threshold.get(), 2);
    assert_eq!(
        p.state,
        StateQuota {
            max_keys: 10,
            max_bytes: 1024
        }
    );
    let other = c.plugin("other").unwrap();
    assert_eq!(other.memory, 32 << 20);
    assert_eq!(other.restart.kind, RestartType::Permanent);
    let g = &c.groups["edge"];
    assert_eq!(
        (g.strategy, g.parent.as_deref()),
        (Strategy::OneForAll, Some("backend"))
    );
    assert_eq!(
        c.groups["backend"].auto_shutdown,
        AutoShutdown::AnySignificant
    );
}

#[test]
fn command_line_overrides_win_over_host_table() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("full.toml"),
        dir.path().join(HOST_CONFIG_FILE),
    )
    .unwrap();
    let o = HostOverrides {
        state: Some("memory".into()),
        admin: Some("127.0.0.1:1234".parse().unwrap()),
    };
    let c = Config::load(dir.path(), &o).unwrap();
    assert_eq!(c.host.state, StateLocation::Memory);
    assert_eq!(c.host.admin.port(), 1234);
}

#[test]
fn a_bad_plugin_file_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("counter.toml"), "\nmemroy = \"1MiB\"\n").unwrap();
    let c = Config::load(dir.path(), &HostOverrides::default()).unwrap();
    let e = format!("{:#}", c.plugin("counter").unwrap_err());
    assert!(e.contains("counter.toml:2: key `memroy`"), "{e}");
}

#[test]
fn invalid_configs_match_their_snapshots() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let dir = fixtures().join("invalid");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let src = std::fs::read_to_string(path).unwrap();
        let (tmp, result) = load_str(&src);
        let err = match result {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => format!("{e:#}\n").replace(&tmp.path().display().to_string(), "DIR"),
        };
        let snapshot = path.with_extension("err");
        if update {
            std::fs::write(&snapshot, &err).unwrap();
        } else {
            let want = std::fs::read_to_string(&snapshot).unwrap_or_else(|_| {
                panic!("{} is missing (UPDATE_SNAPSHOTS=1)", snapshot.display())
            });
            assert_eq!(err, want, "{}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} invalid configs found");
}
