//! The CLI's client for the admin API: one address, an optional bearer
//! token, and answers read back as the API's types ([`Response::json`]).

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A response: status code and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// A finished answer from a streaming one (the event tail's refusal).
    pub async fn read(resp: reqwest::Response) -> Response {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Response { status, body }
    }

    /// The body as the API type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).context("the admin API sent bad JSON")
    }
}

/// Talks to one admin address.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client for `addr` (`host:port`), sending `token` as a bearer token.
    pub fn new(addr: &str, token: Option<String>) -> Result<Client> {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("failed to build the HTTP client")?;
        Ok(Client { base, http, token })
    }

    /// Sends `req` with the token; a connection failure says what to do.
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        req.send().await.with_context(|| {
            format!(
                "cannot reach the admin API at {} to {what}: is `wasm-sup run` running? pass --admin ADDR if it listens elsewhere",
                self.base
            )
        })
    }

    async fn finish(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Response> {
        let resp = self.send(req, what).await?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .context("failed to read the response")?
            .to_vec();
        Ok(Response { status, body })
    }

    /// `GET path?query` kept open for streaming, resuming after
    /// `last_event_id` when given (the event stream).
    pub async fn stream(
        &self,
        path: &str,
        query: &impl Serialize,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut req = self.http.get(format!("{}{path}", self.base)).query(query);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        self.send(req, "follow events").await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Response> {
        self.finish(self.http.get(format!("{}{path}", self.base)), "read")
            .await
    }

    /// `GET path?query`.
    pub async fn get_with(&self, path: &str, query: &impl Serialize) -> Result<Response> {
        let req = self.http.get(format!("{}{path}", self.base)).query(query);
        self.finish(req, "read").await
    }

    /// `POST path?query` without a body.
    pub async fn post_with(&self, path: &str, query: &impl Serialize) -> Result<Response> {
        let req = self.http.post(format!("{}{path}", self.base)).query(query);
        self.finish(req, "send").await
    }

    /// `POST path` with a body.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> Result<Response> {
        self.post_keyed(path, body, None).await
    }

    /// `POST path` with a body, and an `Idempotency-Key` if one is given.
    pub async fn post_keyed(
        &self,
        path: &str,
        body: Vec<u8>,
        key: Option<&str>,
    ) -> Result<Response> {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        self.finish(req, "send").await
    }
}
