//! Rolling deploys (DESIGN.md, "Cluster, precisely"): each node records
//! its catalog (every plugin its folder loaded, with the SHA-256 of its
//! component and a hash of its resolved config) in its node row, and the
//! ownership row records the versions its holder runs. A unit goes only to
//! a node that has those versions, unless no live node has them: then any
//! node takes it, and says so. A config that differs between nodes is
//! logged once per node, plugin and pair of hashes.

use super::Inner;
use super::db::{self, OwnerRow, Snapshot};
use crate::supervisor::Placeable;
use anyhow::Result;
use std::collections::BTreeMap;

/// Writes this node's catalog when it differs from what its row holds,
/// and logs configs that differ from other live nodes'.
pub(super) async fn publish(inner: &Inner, snap: &Snapshot, placeable: &[Placeable]) -> Result<()> {
    let me = inner.config.node.as_str();
    let mine: BTreeMap<String, (String, String)> = placeable
        .iter()
        .map(|p| (p.name.clone(), (p.sha256.clone(), p.config.clone())))
        .collect();
    if snap.nodes.get(me).is_none_or(|n| n.catalog != mine) {
        let entries: Vec<String> = mine
            .iter()
            .map(|(name, (sha, config))| db::catalog_entry(name, sha, config))
            .collect();
        db::publish_catalog(&inner.pool, me, &inner.incarnation(), &entries).await?;
    }
    for other in snap.nodes.values().filter(|n| n.live && n.name != me) {
        for (name, (_, config)) in &other.catalog {
            let Some((_, here)) = mine.get(name) else {
                continue;
            };
            if here == config {
                continue;
            }
            let key = (
                other.name.clone(),
                name.clone(),
                config.clone(),
                here.clone(),
            );
            if inner.config_warned.lock().insert(key) {
                tracing::warn!(
                    plugin = %name,
                    node = %other.name,
                    "{name}'s configuration on node {} differs from this node's (config hash {config} there, {here} here): give every node the same wasm-sup.toml and plugin TOML files",
                    other.name
                );
            }
        }
    }
    Ok(())
}

/// The live nodes a unit may go to: those with the versions its row
/// records, or, when none has them (or there is no row yet), every live
/// node in `live`.
pub(super) fn candidates<'a>(
    snap: &'a Snapshot,
    row: Option<&OwnerRow>,
    live: &[&'a str],
) -> Vec<&'a str> {
    let Some(row) = row.filter(|r| !r.versions.is_empty()) else {
        return live.to_vec();
    };
    let having: Vec<&str> = live
        .iter()
        .copied()
        .filter(|n| snap.nodes.get(*n).is_some_and(|n| n.has_versions_of(row)))
        .collect();
    if having.is_empty() {
        live.to_vec()
    } else {
        having
    }
}

/// What a claim changes in the versions a unit runs, in words, if anything.
pub(super) fn change(row: Option<&OwnerRow>, plugins: &[Placeable]) -> Option<String> {
    let row = row?;
    let changed: Vec<String> = row
        .plugins
        .iter()
        .zip(&row.versions)
        .filter_map(|(p, old)| {
            let new = &plugins.iter().find(|x| &x.name == p)?.sha256;
            (new != old).then(|| format!("{p} {} → {}", short(old), short(new)))
        })
        .collect();
    (!changed.is_empty()).then(|| changed.join(", "))
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::db::NodeRow;

    fn node(name: &str, catalog: &[(&str, &str)]) -> NodeRow {
        NodeRow {
            name: name.into(),
            incarnation: "i".into(),
            address: "127.0.0.1:1".into(),
            expires_ms: 0,
            live: true,
            draining: false,
            joined_ms: 0,
            catalog: catalog
                .iter()
                .map(|(p, v)| (p.to_string(), (v.to_string(), "c".to_string())))
                .collect(),
        }
    }

    fn row(plugins: &[(&str, &str)]) -> OwnerRow {
        OwnerRow {
            unit: "u".into(),
            holder: None,
            last_node: Some("a".into()),
            epoch: 1,
            plugins: plugins.iter().map(|(p, _)| p.to_string()).collect(),
            versions: plugins.iter().map(|(_, v)| v.to_string()).collect(),
            since_ms: 0,
            target: None,
        }
    }

    #[test]
    fn a_unit_goes_to_the_nodes_with_its_versions_unless_none_has_them() {
        let mut snap = Snapshot::default();
        for n in [
            node("a", &[("p", "v1"), ("q", "v1")]),
            node("b", &[("p", "v2"), ("q", "v1")]),
            node("c", &[("p", "v1"), ("q", "v1")]),
        ] {
            snap.nodes.insert(n.name.clone(), n);
        }
        let live = ["a", "b", "c"];
        let r = row(&[("p", "v1"), ("q", "v1")]);
        assert_eq!(candidates(&snap, Some(&r), &live), ["a", "c"]);
        assert!(snap.nodes["a"].has_versions_of(&r) && !snap.nodes["b"].has_versions_of(&r));
        // Only b is left: it takes the unit at its version.
        assert_eq!(candidates(&snap, Some(&r), &["b"]), ["b"]);
        // A new version no node has yet: anyone.
        let r3 = row(&[("p", "v3")]);
        assert_eq!(candidates(&snap, Some(&r3), &live), live);
        assert_eq!(candidates(&snap, None, &live), live);
    }

    #[test]
    fn a_claim_at_other_versions_is_told() {
        let r = row(&[("p", "aaaaaaaaaaaaaaaa"), ("q", "bbbbbbbbbbbbbbbb")]);
        let mine = |p: &str, v: &str| Placeable {
            name: p.into(),
            unit: "u".into(),
            sha256: v.into(),
            config: "c".into(),
        };
        assert_eq!(
            change(
                Some(&r),
                &[mine("p", "aaaaaaaaaaaaaaaa"), mine("q", "bbbbbbbbbbbbbbbb")]
            ),
            None
        );
        assert_eq!(
            change(
                Some(&r),
                &[mine("p", "cccccccccccccccc"), mine("q", "bbbbbbbbbbbbbbbb")]
            )
            .as_deref(),
            Some("p aaaaaaaaaaaa → cccccccccccc")
        );
        assert_eq!(change(None, &[]), None);
    }
}
