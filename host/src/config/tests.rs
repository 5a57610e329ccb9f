//! Configuration tests. Bad files live in `host/tests/fixtures/config/invalid/`,
//! each with the exact error expected in a `.err` file beside it (regenerate
//! with `UPDATE_SNAPSHOTS=1 cargo test -p wasm-sup config::`, then review).

use super::*;
use std::path::PathBuf;
use std::time::Duration;

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
    assert_eq!(
        (c.host.max_plugin_file, c.host.instance_pool),
        (128 << 20, 10)
    );
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
        ..Default::default()
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

/// Issue 13, hole 4: a huge duration, size or count used to be accepted and
/// overflow `Instant` arithmetic at run time (a panicking worker, a plugin
/// wedged in `starting`). Every one is now refused at load, naming the file,
/// line, table, key and the allowed range.
#[test]
fn hole04_huge_values_are_refused_naming_key_and_range() {
    const HUGE_DUR: &str = "\"10000000000s\"";
    const HUGE_SIZE: &str = "\"999999GiB\"";
    let cases: &[(&str, &str, &str, &str)] = &[
        ("host", "window", HUGE_DUR, "1ms and 7days"),
        ("host", "epoch-tick", HUGE_DUR, "1ms and 1s"),
        ("host", "crash-reports", "1_000_000_000", "1 and 10000"),
        ("host", "dead-letters", "1_000_000_000", "1 and 100000"),
        ("host", "coredumps", HUGE_SIZE, "1B and 1024GiB"),
        ("host", "compile-cache", HUGE_SIZE, "1B and 1024GiB"),
        ("host", "max-plugin-file", HUGE_SIZE, "1B and 4GiB"),
        ("host", "instance-pool", "4_000_000_000", "0 and 15000"),
        ("defaults", "memory", HUGE_SIZE, "64KiB and 4GiB"),
        ("defaults", "timeout", HUGE_DUR, "1ms and 1h"),
        ("defaults", "reply-timeout", HUGE_DUR, "1ms and 1h"),
        ("defaults", "idempotency-window", HUGE_DUR, "1s and 7days"),
        ("defaults", "idempotency-window", "\"10ms\"", "1s and 7days"),
        ("defaults", "max-message", HUGE_SIZE, "0B and 64MiB"),
        ("defaults", "max-reply", HUGE_SIZE, "0B and 64MiB"),
        (
            "defaults",
            "mailbox",
            "9_000_000_000_000_000_000",
            "1 and 1000000",
        ),
        ("defaults", "output", HUGE_SIZE, "0B and 64MiB"),
        ("defaults", "shutdown-timeout", HUGE_DUR, "0s and 1h"),
        ("defaults", "tick", HUGE_DUR, "1ms and 1day"),
        ("defaults", "upgrade-probation", HUGE_DUR, "0s and 7days"),
        ("defaults.restart", "initial", HUGE_DUR, "0s and 1h"),
        ("defaults.restart", "max", HUGE_DUR, "0s and 1h"),
        ("defaults.restart", "window", HUGE_DUR, "1ms and 7days"),
        ("defaults.restart", "reset-after", HUGE_DUR, "0s and 7days"),
        ("defaults.restart", "cooldown", HUGE_DUR, "1ms and 7days"),
        (
            "defaults.restart",
            "cooldown-max",
            HUGE_DUR,
            "1ms and 7days",
        ),
        ("defaults.health", "interval", HUGE_DUR, "1ms and 1day"),
        ("defaults.health", "timeout", HUGE_DUR, "1ms and 1h"),
        ("defaults.state", "max-bytes", HUGE_SIZE, "0B and 1024GiB"),
        ("plugins.counter", "timeout", HUGE_DUR, "1ms and 1h"),
        ("groups.g", "window", HUGE_DUR, "1ms and 7days"),
    ];
    for (table, key, value, range) in cases {
        let src = format!("# line 1\n[{table}]\n{key} = {value}\n");
        let (dir, result) = load_str(&src);
        let e = format!("{:#}", result.expect_err(&src));
        let file = dir.path().join(HOST_CONFIG_FILE);
        let want = format!("{}:3: [{table}] key `{key}`: ", file.display());
        assert!(e.starts_with(&want), "{e}\nwants {want}");
        assert!(e.contains(&format!("must be between {range}")), "{e}");
    }
    // NAME.toml too, where a plugin's own settings live.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), "[restart]\nmax = \"400days\"\n").unwrap();
    let c = Config::load(dir.path(), &HostOverrides::default()).unwrap();
    let e = format!("{:#}", c.plugin("p").unwrap_err());
    assert!(
        e.contains(
            "p.toml:2: [restart] key `max`: invalid duration \"400days\": must be between 0s and 1h"
        ),
        "{e}"
    );
}

#[test]
fn hole04_the_bounds_themselves_are_accepted() {
    let (_d, c) = load_str(
        "[host]\nwindow = \"7days\"\ninstance-pool = 0\nmax-plugin-file = \"4GiB\"\n\
         [defaults]\nmemory = \"4GiB\"\ntimeout = \"1h\"\nmailbox = 1_000_000\nmax-message = 0\n\
         tick = \"1day\"\nshutdown-timeout = \"0s\"\n\
         [defaults.restart]\ninitial = \"0s\"\nmax = \"1h\"\ncooldown-max = \"7days\"\n",
    );
    let c = c.unwrap();
    assert_eq!(c.host.instance_pool, 0);
    assert_eq!(c.host.max_plugin_file, 4 << 30);
    let p = c.plugin("x").unwrap();
    assert_eq!((p.memory, p.timeout), (4 << 30, Duration::from_secs(3600)));
    assert_eq!((p.mailbox, p.max_message), (1_000_000, 0));
    assert_eq!(p.restart.cooldown_max, Duration::from_secs(7 * 24 * 3600));
}

/// Issue 15: a check across layers points into the file that made the
/// combination bad, at the key that file sets.
#[test]
fn a_misordered_restart_points_at_the_key_the_top_layer_sets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(HOST_CONFIG_FILE),
        "[defaults.restart]\ninitial = \"10s\"\nmax = \"20s\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "# own\nrestart = { max = \"1s\" }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("q.toml"), "[restart]\ninitial = \"30s\"\n").unwrap();
    let c = Config::load(dir.path(), &HostOverrides::default()).unwrap();
    let e = format!("{:#}", c.plugin("p").unwrap_err());
    assert!(
        e.ends_with("p.toml:2: [restart] key `max`: 1s is smaller than restart.initial (10s)"),
        "{e}"
    );
    let e = format!("{:#}", c.plugin("q").unwrap_err());
    assert!(
        e.ends_with("q.toml:2: [restart] key `initial`: 30s is larger than restart.max (20s)"),
        "{e}"
    );
}

/// Issue 15: a value of the wrong type says what is expected in the words of
/// the configuration reference, never Rust's (`u64`, `a string`).
#[test]
fn type_errors_say_what_is_expected() {
    let cases: &[(&str, &str, &str)] = &[
        ("defaults", "timeout = 5", "expected a duration like \"5s\""),
        (
            "defaults",
            "tick = 5",
            "expected a duration like \"5s\", or \"off\"",
        ),
        (
            "defaults",
            "memory = true",
            "expected a size like \"64MiB\" or a number of bytes",
        ),
        (
            "host",
            "coredumps = true",
            "expected a size like \"64MiB\", a number of bytes, or \"off\"",
        ),
        ("defaults", "mailbox = \"many\"", "expected a whole number"),
        ("defaults", "fuel = 1.5", "expected a whole number"),
        (
            "defaults.restart",
            "max-restarts = \"5\"",
            "expected a whole number",
        ),
        (
            "defaults.restart",
            "max-attempts = 0",
            "invalid number 0: must be between 1 and 4294967295",
        ),
        (
            "defaults.health",
            "threshold = -1",
            "invalid number -1: must be between 1 and 4294967295",
        ),
        (
            "defaults.state",
            "max-keys = \"all\"",
            "expected a whole number",
        ),
        ("host", "max-restarts = 1.0", "expected a whole number"),
        (
            "groups.g",
            "max-restarts = \"3\"",
            "expected a whole number",
        ),
        (
            "defaults.restart",
            "jitter = \"a bit\"",
            "expected a number between 0.0 and 1.0",
        ),
        (
            "defaults.restart",
            "multiplier = \"2x\"",
            "expected a number between 1.0 and 1000.0",
        ),
        (
            "defaults.restart",
            "type = 1",
            "expected one of `permanent`, `transient`, `temporary`",
        ),
        (
            "defaults",
            "dirs = [{ host = \"a\", guest = \"/a\", mode = 1 }]",
            "expected `ro` or `rw`",
        ),
        (
            "groups.g",
            "strategy = true",
            "expected one of `one-for-one`, `one-for-all`, `rest-for-one`",
        ),
        (
            "defaults",
            "network = \"yes\"",
            "expected true, false or a list of patterns",
        ),
        (
            "defaults",
            "restart = 5",
            "expected a table of restart keys",
        ),
        (
            "defaults",
            "dirs = 5",
            "expected a list of tables like [{ host = \"data\"",
        ),
        (
            "defaults",
            "env = \"LANG=C\"",
            "expected a table of strings like { LANG = \"C\" }",
        ),
        (
            "groups.g",
            "members = \"db\"",
            "expected a list of plugin names like [\"db\", \"api\"]",
        ),
        (
            "groups.g",
            "significant = 1",
            "expected a list of plugin names",
        ),
    ];
    for (table, line, want) in cases {
        let src = format!("[{table}]\n{line}\n");
        let (_d, result) = load_str(&src);
        let e = format!("{:#}", result.expect_err(&src));
        assert!(e.contains(want), "{src}: {e}\nwants {want}");
        assert!(e.contains(":2: ["), "{src}: {e}");
        for rust in ["u64", "u32", "i64", "f64", "struct ", "a string", "NonZero"] {
            assert!(!e.contains(rust), "{src}: {e} speaks Rust ({rust})");
        }
    }
}

#[test]
fn config_values_are_kept_as_text_and_words_read_back_what_they_write() {
    let (_d, c) =
        load_str("[defaults]\nconfig = { s = \"x\", n = 4, f = 1.5, b = true, d = 1979-05-27 }\n");
    let p = c.unwrap().plugin("x").unwrap();
    let got: Vec<_> = p.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(got, ["b=true", "d=1979-05-27", "f=1.5", "n=4", "s=x"]);
    for t in [
        RestartType::Permanent,
        RestartType::Transient,
        RestartType::Temporary,
    ] {
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<RestartType>(&json).unwrap(), t);
    }
    for s in [
        Strategy::OneForOne,
        Strategy::OneForAll,
        Strategy::RestForOne,
    ] {
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Strategy>(&json).unwrap(), s);
    }
    for a in [
        AutoShutdown::Never,
        AutoShutdown::AnySignificant,
        AutoShutdown::AllSignificant,
    ] {
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<AutoShutdown>(&json).unwrap(), a);
    }
    for b in [
        BackoffKind::Immediate,
        BackoffKind::Fixed,
        BackoffKind::Exponential,
    ] {
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<BackoffKind>(&json).unwrap(), b);
    }
    for m in [DirMode::Ro, DirMode::Rw] {
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<DirMode>(&json).unwrap(), m);
    }
}

/// Issue 15: a file that is not TOML names its line and shows its text; the
/// message never has an empty `[TABLE] key` part (`FILE:2:: …`).
#[test]
fn a_syntax_error_shows_the_line() {
    let src = "[defaults.restart]\nmax-restarts = \n";
    let (_d, result) = load_str(src);
    let e = format!("{:#}", result.expect_err(src));
    assert!(
        e.contains("wasm-sup.toml:2: not valid TOML (`max-restarts =`): "),
        "{e}"
    );
    assert!(!e.contains("::"), "{e}");
}

#[test]
fn cluster_mode_takes_its_keys_and_the_command_line_wins() {
    let (_d, c) = load_str(
        "[host]\ncluster = \"postgres://u@db:5432/w\"\nnode = \"file-node\"\nadvertise = \"10.0.0.5:9070\"\nlease = \"3s\"\n",
    );
    let c = c.unwrap();
    let k = c.host.cluster.clone().expect("cluster mode");
    assert_eq!(k.url, "postgres://u@db:5432/w");
    assert_eq!(
        (k.node.as_str(), k.advertise.as_str()),
        ("file-node", "10.0.0.5:9070")
    );
    assert_eq!(k.lease, Duration::from_secs(3));
    // The cluster's database holds the state.
    assert_eq!(c.host.state, StateLocation::Postgres(k.url.clone()));

    let dir = tempfile::tempdir().unwrap();
    let o = HostOverrides {
        cluster: Some("postgres://u@db/w".into()),
        node: Some("n1".into()),
        admin: Some("127.0.0.1:7000".parse().unwrap()),
        ..Default::default()
    };
    let c = Config::load(dir.path(), &o).unwrap();
    let k = c.host.cluster.unwrap();
    assert_eq!(k.node, "n1");
    assert_eq!(
        k.advertise, "127.0.0.1:7000",
        "advertise defaults to the admin address"
    );
    assert_eq!(k.lease, Duration::from_secs(10));
    assert!(
        Config::load(dir.path(), &HostOverrides::default())
            .unwrap()
            .host
            .cluster
            .is_none()
    );
}

#[test]
fn cluster_mode_refuses_what_cannot_work_naming_the_fix() {
    let err = |toml: &str| format!("{:#}", load_str(toml).1.unwrap_err());
    let e = err("[host]\ncluster = \"mysql://db/w\"\nnode = \"a\"\n");
    assert!(e.contains("not a PostgreSQL URL"), "{e}");
    let e = err("[host]\ncluster = \"postgres://db/w\"\nnode = \"bad name!\"\n");
    assert!(
        e.contains("invalid node name") && e.contains("--node"),
        "{e}"
    );
    let e = err("[host]\ncluster = \"postgres://db/w\"\nnode = \"a\"\nadvertise = \"nohost\"\n");
    assert!(e.contains("HOST:PORT"), "{e}");
    let e = err("[host]\ncluster = \"postgres://db/w\"\nnode = \"a\"\nadmin = \"0.0.0.0:9070\"\n");
    assert!(e.contains("--advertise"), "{e}");
    let e = err("[host]\ncluster = \"postgres://db/w\"\nnode = \"a\"\nstate = \"memory\"\n");
    assert!(e.contains("drop --state"), "{e}");
    let e = err("[host]\ncluster = \"postgres://db/w\"\nnode = \"a\"\nlease = \"10ms\"\n");
    assert!(e.contains("lease"), "{e}");
}
