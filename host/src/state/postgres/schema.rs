//! The PostgreSQL backend's schema: its tables, created and migrated by the
//! host under a version number, and the advisory lock that keeps a second
//! host off the same database.
//!
//! Versions: `wasm_sup_schema` holds one row, the version the database is
//! at. A host applies each migration above it in one transaction; a
//! database at a version above [`VERSION`] was written by a newer wasm-sup
//! and is refused, so an old binary never writes a layout it does not know.
//! Text columns use the `C` collation, so keys sort by their bytes, as redb
//! sorts them.

use super::why;
use anyhow::{Result, bail};
use tokio_postgres::Client;

/// The schema version this binary writes.
pub(super) const VERSION: i64 = 3;

/// Migration `i` takes the database from version `i` to `i + 1`.
const MIGRATIONS: [&str; VERSION as usize] = [
    r#"
CREATE TABLE wasm_sup_kv (
    plugin text COLLATE "C" NOT NULL,
    bucket text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (plugin, bucket, key)
);
CREATE TABLE wasm_sup_timers (
    id bigint PRIMARY KEY,
    plugin text COLLATE "C" NOT NULL,
    due_ms bigint NOT NULL,
    message bytea NOT NULL
);
CREATE INDEX wasm_sup_timers_plugin ON wasm_sup_timers (plugin);
CREATE TABLE wasm_sup_records (
    plugin text COLLATE "C" NOT NULL,
    kind smallint NOT NULL,
    id bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (plugin, kind, id)
);
CREATE TABLE wasm_sup_answers (
    plugin text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    body_sha256 text NOT NULL,
    status smallint NOT NULL,
    body bytea NOT NULL,
    time_ms bigint NOT NULL,
    PRIMARY KEY (plugin, key)
);
CREATE TABLE wasm_sup_fences (
    plugin text COLLATE "C" PRIMARY KEY,
    token bigint NOT NULL
);
CREATE SEQUENCE wasm_sup_ids INCREMENT BY 1048576;
"#,
    r#"
CREATE TABLE wasm_sup_nodes (
    name text COLLATE "C" PRIMARY KEY,
    incarnation text NOT NULL,
    address text NOT NULL,
    expires_at timestamptz NOT NULL,
    joined_at timestamptz NOT NULL,
    draining boolean NOT NULL DEFAULT false
);
CREATE TABLE wasm_sup_owners (
    unit text COLLATE "C" PRIMARY KEY,
    node text COLLATE "C",
    incarnation text,
    epoch bigint NOT NULL,
    plugins text[] COLLATE "C" NOT NULL,
    versions text[] NOT NULL,
    since timestamptz NOT NULL,
    target text COLLATE "C"
);
CREATE SEQUENCE wasm_sup_epochs;
"#,
    // Cluster mode's inbox: a timer another plugin's commit wrote for a
    // plugin owned elsewhere is not taken (NULL) until its owner reads it
    // (then the token of that read; 0 for every other timer); the
    // event stream's ids; each node's plugins, their versions and configs
    // ("NAME SHA256 CONFIG-HASH"), for rolling deploys.
    r#"
ALTER TABLE wasm_sup_nodes ADD COLUMN catalog text[] COLLATE "C" NOT NULL DEFAULT '{}';
ALTER TABLE wasm_sup_timers ADD COLUMN taken bigint DEFAULT 0;
CREATE INDEX wasm_sup_timers_inbox ON wasm_sup_timers (plugin) WHERE taken IS NULL;
CREATE SEQUENCE wasm_sup_event_ids;
"#,
];

/// The key of the session advisory lock a host holds on its database
/// (the bytes of "wasm-sup").
pub(super) const LOCK_KEY: i64 = 0x7761_736d_2d73_7570;

/// Takes the advisory lock on `client`'s session; `false`: another session
/// holds it. A single host takes it exclusively; the nodes of a cluster
/// share it, so a single host and a cluster never run on one database.
pub(super) async fn lock(client: &Client, shared: bool) -> Result<bool, tokio_postgres::Error> {
    let sql = if shared {
        "SELECT pg_try_advisory_lock_shared($1)"
    } else {
        "SELECT pg_try_advisory_lock($1)"
    };
    let row = client.query_one(sql, &[&LOCK_KEY]).await?;
    row.try_get(0)
}

/// Brings the database to [`VERSION`], or refuses one that is newer.
/// `shown` names the database in messages.
pub(super) async fn migrate(client: &mut Client, shown: &str) -> Result<()> {
    let fail = |e: tokio_postgres::Error| {
        anyhow::anyhow!(
            "failed to set up the schema in the state database {shown}: {}",
            why(&e)
        )
    };
    let tx = client.transaction().await.map_err(fail)?;
    // Nodes of a cluster start together: one migrates at a time.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(LOCK_KEY + 1)])
        .await
        .map_err(fail)?;
    // Without the server's notice that the table exists, on every start.
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning; \
         CREATE TABLE IF NOT EXISTS wasm_sup_schema (version bigint NOT NULL)",
    )
    .await
    .map_err(fail)?;
    let rows = tx
        .query("SELECT version FROM wasm_sup_schema", &[])
        .await
        .map_err(fail)?;
    let at: i64 = match rows.first() {
        Some(row) => row.try_get(0).map_err(fail)?,
        None => {
            tx.execute("INSERT INTO wasm_sup_schema (version) VALUES (0)", &[])
                .await
                .map_err(fail)?;
            0
        }
    };
    if at > VERSION {
        bail!(
            "the state database {shown} has schema version {at}, newer than this wasm-sup knows ({VERSION}): run the wasm-sup that wrote it (or a newer one), or pass --state with another database"
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(at as usize) {
        tx.batch_execute(sql).await.map_err(fail)?;
        let to = i as i64 + 1;
        tx.execute("UPDATE wasm_sup_schema SET version = $1", &[&to])
            .await
            .map_err(fail)?;
        tracing::info!("state database {shown}: schema migrated to version {to}");
    }
    tx.commit().await.map_err(fail)?;
    Ok(())
}
