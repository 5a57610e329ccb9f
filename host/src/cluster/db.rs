//! The cluster's rows in PostgreSQL, and every statement that reads or
//! writes them. Times are judged by the database's clock alone
//! (`now()`), and come back as milliseconds of that clock.
//!
//! - `wasm_sup_nodes`: one row per node name: its current incarnation, its
//!   advertised address, when its lease expires, whether it drains, and its
//!   catalog: every plugin its folder loaded, with version and config hash.
//! - `wasm_sup_owners`: one row per unit of ownership: the holder (node and
//!   incarnation; the incarnation `NULL` once released, the node kept as the
//!   last holder), the fencing epoch (from the
//!   sequence `wasm_sup_epochs`, bumped on every claim), its plugins and
//!   their versions, and when it was claimed or released.
//! - A claim also raises the fence (`wasm_sup_fences`) of each of the
//!   unit's plugins to the new epoch, in the same transaction: from then on
//!   the state backend refuses the old holder's commits.

use crate::state::postgres::why;
use anyhow::Result;
use deadpool_postgres::Pool;
use std::collections::BTreeMap;
use std::time::Duration;

/// A node as the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Its name.
    pub name: String,
    /// The running process's random id.
    pub incarnation: String,
    /// Where other nodes forward to.
    pub address: String,
    /// When its lease expires (database clock, ms since the Unix epoch).
    pub expires_ms: i64,
    /// Whether its lease is live now.
    pub live: bool,
    /// Whether it is draining (it claims nothing and hands its units over).
    pub draining: bool,
    /// When this incarnation registered (database clock, ms).
    pub joined_ms: i64,
    /// Its folder's plugins: name → (SHA-256, config hash).
    pub catalog: BTreeMap<String, (String, String)>,
}

impl NodeRow {
    /// Whether this node has every plugin of `row` at the version recorded.
    pub fn has_versions_of(&self, row: &OwnerRow) -> bool {
        row.plugins
            .iter()
            .zip(&row.versions)
            .all(|(p, v)| self.catalog.get(p).is_some_and(|(sha, _)| sha == v))
    }
}

/// One catalog entry as stored: `NAME SHA256 CONFIG-HASH`.
pub fn catalog_entry(name: &str, sha256: &str, config: &str) -> String {
    format!("{name} {sha256} {config}")
}

fn parse_catalog(entries: Vec<String>) -> BTreeMap<String, (String, String)> {
    entries
        .iter()
        .filter_map(|e| {
            let mut w = e.split(' ');
            let (name, sha, config) = (w.next()?, w.next()?, w.next()?);
            Some((name.to_string(), (sha.to_string(), config.to_string())))
        })
        .collect()
}

/// A unit's ownership row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRow {
    /// The unit: a plugin's name, or `group:NAME`.
    pub unit: String,
    /// The holder's node and incarnation; `None` once released.
    pub holder: Option<(String, String)>,
    /// The node that held it last (the holder's, or the one that released it).
    pub last_node: Option<String>,
    /// The fencing epoch of the last claim.
    pub epoch: i64,
    /// The unit's plugins at the last claim.
    pub plugins: Vec<String>,
    /// Their versions (SHA-256) as the holder runs them, in the same order.
    pub versions: Vec<String>,
    /// When it was last claimed or released (database clock, ms).
    pub since_ms: i64,
    /// The node it was moved to (`wasm-sup move`): that node claims it, and
    /// keeps it however rendezvous hashing would place it.
    pub target: Option<String>,
}

/// One read of the cluster's rows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeRow>,
    /// Ownership rows by unit.
    pub owners: BTreeMap<String, OwnerRow>,
    /// The database's clock at the read (ms).
    pub now_ms: i64,
}

impl Snapshot {
    /// The live node holding `row`, if its holder's lease is live.
    pub fn live_holder(&self, row: &OwnerRow) -> Option<&NodeRow> {
        let (node, incarnation) = row.holder.as_ref()?;
        self.nodes
            .get(node)
            .filter(|n| n.live && &n.incarnation == incarnation)
    }

    /// The unit row holding plugin `name`.
    pub fn row_of(&self, name: &str) -> Option<&OwnerRow> {
        self.owners
            .values()
            .find(|r| r.plugins.iter().any(|p| p == name))
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Reads every node and ownership row.
pub async fn read(pool: &Pool) -> Result<Snapshot> {
    let client = pool.get().await?;
    let nodes = client
        .query(
            "SELECT name, incarnation, address, \
                    (extract(epoch FROM expires_at) * 1000)::bigint, expires_at > now(), draining, \
                    (extract(epoch FROM now()) * 1000)::bigint, \
                    (extract(epoch FROM joined_at) * 1000)::bigint, catalog \
             FROM wasm_sup_nodes",
            &[],
        )
        .await?;
    let owners = client
        .query(
            "SELECT unit, node, incarnation, epoch, plugins, (extract(epoch FROM since) * 1000)::bigint, \
                    (extract(epoch FROM now()) * 1000)::bigint, target, versions \
             FROM wasm_sup_owners",
            &[],
        )
        .await?;
    let mut snap = Snapshot::default();
    for r in nodes {
        snap.now_ms = r.try_get(6)?;
        let n = NodeRow {
            name: r.try_get(0)?,
            incarnation: r.try_get(1)?,
            address: r.try_get(2)?,
            expires_ms: r.try_get(3)?,
            live: r.try_get(4)?,
            draining: r.try_get(5)?,
            joined_ms: r.try_get(7)?,
            catalog: parse_catalog(r.try_get(8)?),
        };
        snap.nodes.insert(n.name.clone(), n);
    }
    for r in owners {
        snap.now_ms = snap.now_ms.max(r.try_get(6)?);
        let node: Option<String> = r.try_get(1)?;
        let incarnation: Option<String> = r.try_get(2)?;
        let o = OwnerRow {
            unit: r.try_get(0)?,
            holder: node.clone().zip(incarnation),
            last_node: node,
            epoch: r.try_get(3)?,
            plugins: r.try_get(4)?,
            since_ms: r.try_get(5)?,
            target: r.try_get(7)?,
            versions: r.try_get(8)?,
        };
        snap.owners.insert(o.unit.clone(), o);
    }
    if snap.now_ms == 0 {
        let row = client
            .query_one("SELECT (extract(epoch FROM now()) * 1000)::bigint", &[])
            .await?;
        snap.now_ms = row.try_get(0)?;
    }
    Ok(snap)
}

/// The row of node `name`, if any.
pub async fn node(pool: &Pool, name: &str) -> Result<Option<NodeRow>> {
    let snap = read(pool).await?;
    Ok(snap.nodes.get(name).cloned())
}

/// Registers `incarnation` under `name` with a fresh lease, unless another
/// incarnation holds the name with a live lease; whether it did.
pub async fn register(
    pool: &Pool,
    name: &str,
    incarnation: &str,
    address: &str,
    lease: Duration,
) -> Result<bool> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "INSERT INTO wasm_sup_nodes (name, incarnation, address, expires_at, joined_at, draining) \
             VALUES ($1, $2, $3, now() + $4::bigint * interval '1 millisecond', now(), false) \
             ON CONFLICT (name) DO UPDATE SET incarnation = EXCLUDED.incarnation, \
                 address = EXCLUDED.address, expires_at = EXCLUDED.expires_at, \
                 joined_at = EXCLUDED.joined_at, draining = false \
             WHERE wasm_sup_nodes.expires_at <= now() \
             RETURNING 1",
            &[&name, &incarnation, &address, &ms(lease)],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Renews the lease of `incarnation`; `false`: it had lapsed (or another
/// incarnation holds the name), and is not renewed.
pub async fn renew(pool: &Pool, name: &str, incarnation: &str, lease: Duration) -> Result<bool> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "UPDATE wasm_sup_nodes SET expires_at = now() + $3::bigint * interval '1 millisecond' \
             WHERE name = $1 AND incarnation = $2 AND expires_at > now() RETURNING 1",
            &[&name, &incarnation, &ms(lease)],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Records the node's catalog (see [`NodeRow::catalog`]).
pub async fn publish_catalog(
    pool: &Pool,
    name: &str,
    incarnation: &str,
    entries: &[String],
) -> Result<()> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE wasm_sup_nodes SET catalog = $3 WHERE name = $1 AND incarnation = $2",
            &[&name, &incarnation, &entries],
        )
        .await?;
    Ok(())
}

/// Marks the node draining: it is left out of placement from now on.
pub async fn set_draining(pool: &Pool, name: &str, incarnation: &str) -> Result<()> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE wasm_sup_nodes SET draining = true WHERE name = $1 AND incarnation = $2",
            &[&name, &incarnation],
        )
        .await?;
    Ok(())
}

/// Ends the node's lease now (it left the cluster).
pub async fn leave(pool: &Pool, name: &str, incarnation: &str) -> Result<()> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE wasm_sup_nodes SET expires_at = now() WHERE name = $1 AND incarnation = $2",
            &[&name, &incarnation],
        )
        .await?;
    Ok(())
}

/// What a claim is about.
pub struct Claim<'a> {
    /// The unit.
    pub unit: &'a str,
    /// Its plugins, and their versions (SHA-256), on this node.
    pub plugins: &'a [String],
    /// The versions of `plugins`, in the same order.
    pub versions: &'a [String],
    /// The epoch of the row as last read (`None`: there was no row).
    pub seen_epoch: Option<i64>,
}

/// Claims a unit for `node`/`incarnation`: only while this node's lease is
/// live, only if the row is still as read (`seen_epoch`), and only if its
/// holder's lease is not live (or the holder is this incarnation). Raises
/// the unit's plugins' fences in the same transaction. The new epoch, or
/// `None` when another node was first.
pub async fn claim(
    pool: &Pool,
    node: &str,
    incarnation: &str,
    claim: &Claim<'_>,
) -> Result<Option<i64>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let me = tx
        .query(
            "SELECT 1 FROM wasm_sup_nodes WHERE name = $1 AND incarnation = $2 \
             AND expires_at > now() AND NOT draining FOR SHARE",
            &[&node, &incarnation],
        )
        .await?;
    if me.is_empty() {
        return Ok(None);
    }
    let rows = match claim.seen_epoch {
        Some(seen) => {
            tx.query(
                "UPDATE wasm_sup_owners o SET node = $2, incarnation = $3, \
                     epoch = nextval('wasm_sup_epochs'), plugins = $4, versions = $5, since = now(), \
                     target = CASE WHEN o.target = $2 THEN o.target END \
                 WHERE unit = $1 AND epoch = $6 AND NOT EXISTS ( \
                     SELECT 1 FROM wasm_sup_nodes n WHERE n.name = o.node AND n.incarnation = o.incarnation \
                     AND n.expires_at > now() AND NOT (n.name = $2 AND n.incarnation = $3)) \
                 RETURNING epoch",
                &[
                    &claim.unit,
                    &node,
                    &incarnation,
                    &claim.plugins,
                    &claim.versions,
                    &seen,
                ],
            )
            .await?
        }
        None => {
            tx.query(
                "INSERT INTO wasm_sup_owners (unit, node, incarnation, epoch, plugins, versions, since) \
                 VALUES ($1, $2, $3, nextval('wasm_sup_epochs'), $4, $5, now()) \
                 ON CONFLICT (unit) DO NOTHING RETURNING epoch",
                &[
                    &claim.unit,
                    &node,
                    &incarnation,
                    &claim.plugins,
                    &claim.versions,
                ],
            )
            .await?
        }
    };
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let epoch: i64 = row.try_get(0)?;
    raise_fences(&tx, claim.plugins, epoch).await?;
    tx.commit().await?;
    Ok(Some(epoch))
}

/// Records anew the plugins and versions of a unit this incarnation holds
/// under `epoch` (plugins joined it, or were upgraded here), and raises
/// the plugins' fences to the unit's epoch (the others' commits are not
/// disturbed: their fence is that epoch already). Whether the row was
/// still this node's.
pub async fn extend(
    pool: &Pool,
    unit: &str,
    node: &str,
    incarnation: &str,
    epoch: i64,
    plugins: &[String],
    versions: &[String],
) -> Result<bool> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE wasm_sup_owners SET plugins = $5, versions = $6 \
             WHERE unit = $1 AND node = $2 AND incarnation = $3 AND epoch = $4",
            &[&unit, &node, &incarnation, &epoch, &plugins, &versions],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    raise_fences(&tx, plugins, epoch).await?;
    tx.commit().await?;
    Ok(true)
}

/// Raises the fences of `plugins` to `epoch` (never lowers one).
async fn raise_fences(
    tx: &deadpool_postgres::Transaction<'_>,
    plugins: &[String],
    epoch: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO wasm_sup_fences (plugin, token) SELECT p, $2 FROM unnest($1::text[]) AS p \
         ON CONFLICT (plugin) DO UPDATE SET token = GREATEST(wasm_sup_fences.token, EXCLUDED.token)",
        &[&plugins, &epoch],
    )
    .await?;
    Ok(())
}

/// Releases a unit this incarnation holds under `epoch` (a drain, a
/// rebalance, a move to `target`, or its file was removed here): its
/// incarnation is cleared, its node kept as the last holder; the epoch
/// stays, the next claim bumps it.
pub async fn release(
    pool: &Pool,
    unit: &str,
    node: &str,
    incarnation: &str,
    epoch: i64,
    target: Option<&str>,
) -> Result<()> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE wasm_sup_owners SET incarnation = NULL, since = now(), target = $5 \
             WHERE unit = $1 AND node = $2 AND incarnation = $3 AND epoch = $4",
            &[&unit, &node, &incarnation, &epoch, &target],
        )
        .await?;
    Ok(())
}

/// One line for a database error.
pub fn describe(e: &anyhow::Error) -> String {
    match e.downcast_ref::<tokio_postgres::Error>() {
        Some(pg) => why(pg),
        None => format!("{e:#}"),
    }
}
