//! The lists and string tables of the configuration files (`dirs`,
//! `members`, `significant`, `env`): serde's own `Vec` and map would refuse a
//! value of the wrong type with "expected a sequence" or "expected a map";
//! these say what is expected with an example, in the words of
//! docs/configuration.md.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::collections::BTreeMap;
use std::fmt;

/// A list in a configuration file (`dirs`, `members`, `significant`): a
/// value that is not a list is refused with [`ListOf::EXPECTING`], an
/// example in the reference's words, instead of serde's "a sequence".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'a, T> IntoIterator for &'a List<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// What a [`List`] of `Self` looks like, for its error message.
pub trait ListOf {
    /// `expected …` text, with an example.
    const EXPECTING: &'static str;
}

impl ListOf for String {
    const EXPECTING: &'static str = "a list of plugin names like [\"db\", \"api\"]";
}

impl<T> std::ops::Deref for List<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<'de, T: Deserialize<'de> + ListOf> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + ListOf> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<List<T>, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(List)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// `env = { … }`: names to string values; anything else is refused with an
/// example instead of serde's "a map".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvTable(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for EnvTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvTable;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of strings like { LANG = \"C\" }")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<EnvTable, A::Error> {
                BTreeMap::deserialize(de::value::MapAccessDeserializer::new(map)).map(EnvTable)
            }
        }
        d.deserialize_map(V)
    }
}
