//! `wasi:keyvalue@0.2.0-draft` (`store`, `atomics`, `batch`) on the plugin's
//! state backend, through the call's transaction ([`crate::instance::txn`]).
//!
//! Bucket identifiers are 1–64 characters of `[a-z0-9._-]`; `default` always
//! exists and any other valid identifier is created on `open`. Buckets are
//! namespaced by plugin in the backend, so one plugin never sees another's.
//! `list-keys` pages by [`LIST_PAGE`] keys; its cursor is a clamped offset.
//! `increment` stores decimal ASCII. A write past the quota returns
//! `error::other("quota exceeded: …")`; it does not trap.
//!
//! Every import here is async (see [`crate::bindings`]): reads await the
//! plugin's [`crate::state::view::StateView`] and its backend.

use crate::bindings::keyvalue::{self as store, HostBucket, KeyResponse};
use crate::bindings::{atomics, batch};
use crate::instance::HostState;
use crate::instance::txn::WriteError;
use wasmtime::component::Resource;

/// Keys returned by one `list-keys` call.
pub const LIST_PAGE: usize = 1000;
/// Most keys one batch call may name.
pub const MAX_BATCH: usize = 10_000;
/// Longest key accepted, bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// Buckets one instance may hold open at once (each is a host-side resource).
pub const MAX_OPEN_BUCKETS: usize = 1024;

/// An open bucket (the `bucket` resource).
#[derive(Debug)]
pub struct Bucket {
    name: String,
}

/// The error of a keyvalue call, before it is converted for the guest.
#[derive(Debug)]
pub enum KvError {
    /// `no-such-store`.
    NoSuchStore,
    /// `other(..)`.
    Other(String),
}

impl From<wasmtime::component::ResourceTableError> for KvError {
    fn from(e: wasmtime::component::ResourceTableError) -> Self {
        KvError::Other(e.to_string())
    }
}

impl From<anyhow::Error> for KvError {
    fn from(e: anyhow::Error) -> Self {
        KvError::Other(format!("state backend error: {e:#}"))
    }
}

impl From<WriteError> for KvError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Quota(m) => KvError::Other(m),
            WriteError::Backend(e) => e.into(),
        }
    }
}

type R<T> = Result<T, KvError>;

/// Checks a bucket identifier.
pub fn valid_bucket(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl HostState {
    /// Refuses a key over the limit, or one the backend cannot store.
    fn check_key(&self, key: &str) -> R<()> {
        if key.len() > MAX_KEY_BYTES {
            return Err(KvError::Other(format!(
                "key of {} bytes is longer than the limit of {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        self.env
            .state
            .backend()
            .check_key(key)
            .map_err(KvError::Other)
    }

    fn bucket_name(&self, b: &Resource<Bucket>) -> R<String> {
        Ok(self.table.get(b)?.name.clone())
    }

    async fn kv_get(&mut self, bucket: &str, key: &str) -> R<Option<Vec<u8>>> {
        Ok(self.txn.get(&self.env.state, bucket, key).await?)
    }

    async fn kv_write(&mut self, bucket: &str, key: &str, value: Option<Vec<u8>>) -> R<()> {
        self.check_key(key)?;
        let env = &self.env;
        Ok(self
            .txn
            .write(&env.state, &env.config.state, bucket, key, value)
            .await?)
    }
}

impl store::Host for HostState {
    async fn open(&mut self, identifier: String) -> R<Resource<Bucket>> {
        if !valid_bucket(&identifier) {
            return Err(KvError::Other(format!(
                "invalid bucket identifier {identifier:?}: use 1-64 characters of a-z, 0-9, '.', '_' and '-'"
            )));
        }
        if self.open_buckets >= MAX_OPEN_BUCKETS {
            return Err(KvError::Other(format!(
                "too many open buckets ({MAX_OPEN_BUCKETS}): drop the ones no longer used"
            )));
        }
        let b = self.table.push(Bucket { name: identifier })?;
        self.open_buckets += 1;
        Ok(b)
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<store::Error> {
        Ok(match err {
            KvError::NoSuchStore => store::Error::NoSuchStore,
            KvError::Other(m) => store::Error::Other(m),
        })
    }
}

impl HostBucket for HostState {
    async fn get(&mut self, b: Resource<Bucket>, key: String) -> R<Option<Vec<u8>>> {
        let bucket = self.bucket_name(&b)?;
        self.kv_get(&bucket, &key).await
    }

    async fn set(&mut self, b: Resource<Bucket>, key: String, value: Vec<u8>) -> R<()> {
        let bucket = self.bucket_name(&b)?;
        self.kv_write(&bucket, &key, Some(value)).await
    }

    async fn delete(&mut self, b: Resource<Bucket>, key: String) -> R<()> {
        let bucket = self.bucket_name(&b)?;
        self.kv_write(&bucket, &key, None).await
    }

    async fn exists(&mut self, b: Resource<Bucket>, key: String) -> R<bool> {
        let bucket = self.bucket_name(&b)?;
        Ok(self.kv_get(&bucket, &key).await?.is_some())
    }

    async fn list_keys(&mut self, b: Resource<Bucket>, cursor: Option<u64>) -> R<KeyResponse> {
        let bucket = self.bucket_name(&b)?;
        let keys = self.txn.keys(&self.env.state, &bucket).await?;
        let start = usize::try_from(cursor.unwrap_or(0))
            .unwrap_or(usize::MAX)
            .min(keys.len());
        let end = start.saturating_add(LIST_PAGE).min(keys.len());
        Ok(KeyResponse {
            keys: keys[start..end].to_vec(),
            cursor: (end < keys.len()).then_some(end as u64),
        })
    }

    async fn drop(&mut self, b: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        self.open_buckets -= 1;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(&mut self, b: Resource<Bucket>, key: String, delta: u64) -> R<u64> {
        let bucket = self.bucket_name(&b)?;
        let current = match self.kv_get(&bucket, &key).await? {
            None => 0,
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    KvError::Other(format!("value of {key:?} is not a decimal number"))
                })?,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvError::Other(format!("incrementing {key:?} overflows u64")))?;
        self.kv_write(&bucket, &key, Some(next.to_string().into_bytes()))
            .await?;
        Ok(next)
    }
}

fn check_batch(n: usize) -> R<()> {
    if n > MAX_BATCH {
        return Err(KvError::Other(format!(
            "batch of {n} keys is larger than the limit of {MAX_BATCH}"
        )));
    }
    Ok(())
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        b: Resource<Bucket>,
        keys: Vec<String>,
    ) -> R<Vec<Option<(String, Vec<u8>)>>> {
        check_batch(keys.len())?;
        let bucket = self.bucket_name(&b)?;
        let mut found = Vec::with_capacity(keys.len());
        for k in keys {
            found.push(self.kv_get(&bucket, &k).await?.map(|v| (k, v)));
        }
        Ok(found)
    }

    async fn set_many(&mut self, b: Resource<Bucket>, key_values: Vec<(String, Vec<u8>)>) -> R<()> {
        check_batch(key_values.len())?;
        let bucket = self.bucket_name(&b)?;
        for (k, v) in key_values {
            self.kv_write(&bucket, &k, Some(v)).await?;
        }
        Ok(())
    }

    async fn delete_many(&mut self, b: Resource<Bucket>, keys: Vec<String>) -> R<()> {
        check_batch(keys.len())?;
        let bucket = self.bucket_name(&b)?;
        for k in keys {
            self.kv_write(&bucket, &k, None).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bucket_identifiers() {
        for ok in ["default", "a", "x.y_z-0", &"b".repeat(64)] {
            assert!(super::valid_bucket(ok), "{ok}");
        }
        for bad in ["", "Default", "a/b", "a b", &"b".repeat(65)] {
            assert!(!super::valid_bucket(bad), "{bad}");
        }
    }
}
