//! The configuration reference, docs/configuration.md, and the keys the code
//! accepts are kept in step: every key of a [`layer`](super::layer) type has
//! a row under its heading, and every row is a key the code accepts.
//!
//! The code's keys are read from the layer types themselves: serde's derive
//! hands each struct's field names (as written in TOML) to
//! `Deserializer::deserialize_struct`, and a probe deserializer records them.

use super::layer::{GroupLayer, HealthLayer, HostLayer, PluginLayer, RestartLayer, StateLayer};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::collections::BTreeSet;

/// The keys of the struct `T` deserializes as, in TOML spelling.
fn keys<'de, T: Deserialize<'de>>() -> BTreeSet<String> {
    struct Probe(Option<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for &mut Probe {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    let fields = probe.0.expect("a layer type deserializes as a struct");
    fields.iter().map(|f| f.to_string()).collect()
}

/// The keys in the first column of the table under the line `heading`.
fn documented(md: &str, heading: &str) -> BTreeSet<String> {
    let mut lines = md.lines().skip_while(|l| l.trim_end() != heading);
    assert!(
        lines.next().is_some(),
        "docs/configuration.md has no line {heading:?}"
    );
    let keys: BTreeSet<String> = lines
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|rest| rest.split('`').next().unwrap_or_default().to_string())
        .collect();
    assert!(!keys.is_empty(), "no key rows under {heading:?}");
    keys
}

/// Plugin keys, a subtable's written `restart.type`.
fn plugin_keys() -> BTreeSet<String> {
    let subtables = [
        ("restart", keys::<RestartLayer>()),
        ("health", keys::<HealthLayer>()),
        ("state", keys::<StateLayer>()),
    ];
    assert_eq!(
        subtables.each_ref().map(|(t, _)| *t),
        super::locate::PLUGIN_SUBTABLES,
        "the locator knows the same subtables"
    );
    let mut all = keys::<PluginLayer>();
    for (table, keys) in subtables {
        assert!(all.remove(table), "PluginLayer has no `{table}`");
        all.extend(keys.iter().map(|k| format!("{table}.{k}")));
    }
    all
}

#[test]
fn the_configuration_reference_lists_exactly_the_keys_the_code_accepts() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let md = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let tables = [
        ("## Plugin keys", plugin_keys()),
        ("## [host] keys", keys::<HostLayer>()),
        ("## [groups.NAME] keys", keys::<GroupLayer>()),
    ];
    for (heading, code) in tables {
        let docs = documented(&md, heading);
        let undocumented: Vec<_> = code.difference(&docs).collect();
        let unknown: Vec<_> = docs.difference(&code).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "{path}, {heading}: keys the code accepts but the page does not list: \
             {undocumented:?}; rows for keys the code does not accept: {unknown:?}"
        );
    }
}

#[test]
fn the_probe_reads_renamed_keys() {
    let restart = keys::<RestartLayer>();
    assert!(restart.contains("type") && restart.contains("max-attempts"));
    assert!(keys::<HostLayer>().contains("fuel-metering"));
}
