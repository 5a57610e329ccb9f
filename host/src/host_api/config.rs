//! `wasi:config/store`: the plugin's `[plugins.NAME.config]` table, read-only.

use crate::bindings::config::{Error, Host};
use crate::instance::HostState;

impl Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        Ok(Ok(self.env.config.config.get(&key).cloned()))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, Error>> {
        Ok(Ok(self
            .env
            .config
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}
