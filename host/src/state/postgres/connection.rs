//! The PostgreSQL backend's connections: the URL and the settings every
//! connection uses, one connection driven on a task of its own, which
//! errors mean the server is unreachable (worth waiting for), and the two
//! background tasks that hold a connection: the advisory lock's keeper and
//! the fetcher of id blocks.

use super::{LOCK_LOST, Shared, schema, u64_of};
use crate::state::ids::BlockIds;
use anyhow::{Result, anyhow, bail};
use deadpool_postgres::Pool;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_postgres::NoTls;

/// How long to wait to connect before calling a server unreachable.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The URL as logs and errors show it: without its password.
fn shown(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// What a PostgreSQL error says, for one line: the server's message, or
/// the client's with its cause.
pub(crate) fn why(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Whether an error means the server is unreachable or restarting (worth
/// waiting for), rather than a refusal that will not change.
pub(super) fn transient(e: &anyhow::Error) -> bool {
    let pg = |e: &tokio_postgres::Error| match e.code() {
        Some(code) => {
            let c = code.code();
            // Connection exceptions, operator intervention (shutdown,
            // crash recovery), too many connections, serialization.
            c.starts_with("08")
                || c.starts_with("57P")
                || c == "53300"
                || c == "40001"
                || c == "40P01"
        }
        // No server error: the connection closed, an I/O error, or a
        // connect that failed or timed out. Not a decoding error.
        None => {
            let what = e.to_string();
            e.is_closed()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                || what.starts_with("error connecting")
                || what.starts_with("timeout")
                || what.starts_with("error communicating")
        }
    };
    if let Some(e) = e.downcast_ref::<tokio_postgres::Error>() {
        return pg(e);
    }
    match e.downcast_ref::<deadpool_postgres::PoolError>() {
        Some(deadpool_postgres::PoolError::Backend(e)) => pg(e),
        Some(deadpool_postgres::PoolError::Timeout(_)) => true,
        _ => e.to_string().contains(LOCK_LOST),
    }
}

/// Parses a PostgreSQL URL given as `flag`, with the settings every
/// connection of the host uses; also the URL as messages show it.
pub(crate) fn config_of(url: &str, flag: &str) -> Result<(tokio_postgres::Config, String)> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
        anyhow!(
            "invalid PostgreSQL URL in {flag}: {}: write postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
            why(&e)
        )
    })?;
    let shown = shown(&config);
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        bail!(
            "{shown} asks for TLS (sslmode=require), which this wasm-sup is built without: connect over a trusted network or a local TLS tunnel and drop sslmode=require"
        );
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("wasm-sup");
    Ok((config, shown))
}

/// Opens one connection and drives it on a task of its own.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
    shown: &str,
) -> Result<tokio_postgres::Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        let hint = match e.code().map(|c| c.code()) {
            Some("28P01" | "28000") => {
                " (check the user and password in --state, and the server's pg_hba.conf)"
            }
            Some("3D000") => " (create it with createdb, or name another database in --state)",
            Some(_) => "",
            None => " (is the server running and listening there?)",
        };
        anyhow!("cannot connect to PostgreSQL at {shown}: {}{hint}", why(&e))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

/// The first id of a new block from the sequence.
pub(super) async fn fetch_block(
    client: &tokio_postgres::Client,
) -> Result<u64, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT nextval('wasm_sup_ids')", &[])
        .await?;
    Ok(u64_of(row.try_get(0)?))
}

/// Fetches the next block of ids whenever [`BlockIds`] asks for one.
pub(super) async fn fetch_ids(pool: Pool, ids: Arc<BlockIds>) {
    loop {
        ids.wanted().await;
        let start = match pool.get().await {
            Ok(client) => fetch_block(&client).await.ok(),
            Err(_) => None,
        };
        if start.is_none() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        ids.fetched(start);
    }
}

/// Holds the advisory lock: when its connection ends, commits pause
/// ([`Shared::locked`]) until a new connection has taken the lock again.
pub(super) async fn keep_lock(
    mut client: tokio_postgres::Client,
    config: tokio_postgres::Config,
    shown: String,
    shared: Arc<Shared>,
) {
    loop {
        // Returns once the connection is gone: a query on a closed
        // connection fails at once.
        while !client.is_closed() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        shared.locked.store(false, Ordering::SeqCst);
        shared.forget_all();
        tracing::warn!(
            "lost the connection holding the state database's lock ({shown}): commits wait until it is back"
        );
        let mut told = false;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Ok(c) = connect(&config, &shown).await else {
                continue;
            };
            match schema::lock(&c, shared.clustered).await {
                Ok(true) => {
                    client = c;
                    break;
                }
                Ok(false) if !told => {
                    told = true;
                    tracing::error!(
                        "the state database {shown} is locked by another wasm-sup: this host's commits wait (stop one of the two hosts)"
                    );
                }
                Ok(false) => {}
                Err(_) => {}
            }
        }
        // Another host may have written while the lock was free.
        shared.forget_all();
        shared.locked.store(true, Ordering::SeqCst);
        tracing::info!("state database {shown} reachable again; commits resume");
    }
}
