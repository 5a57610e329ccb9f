//! What handlers take from a request, already checked: [`PluginName`] (the
//! `{name}` of the path, a valid plugin name, else 400), [`KnownPlugin`]
//! (one that also exists, else 404), and [`Path`] and [`Query`], axum's
//! extractors whose rejections answer as [`ApiError`] JSON.
//!
//! Nothing here reads state beyond whether a plugin exists.

use super::error::ApiError;
use crate::name::validate_name;
use crate::supervisor::SupervisorHandle;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// The `{name}` of the path: a valid plugin name (400 otherwise), which need
/// not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PluginName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(mut params) =
            Path::<HashMap<String, String>>::from_request_parts(parts, state).await?;
        let name = params
            .remove("name")
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the route has no {{name}}")))?;
        validate_name(&name).map_err(ApiError::BadName)?;
        Ok(PluginName(name))
    }
}

/// The `{name}` of the path: a valid name of a plugin that exists (404
/// otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPlugin(pub String);

impl FromRequestParts<SupervisorHandle> for KnownPlugin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        sup: &SupervisorHandle,
    ) -> Result<Self, ApiError> {
        let PluginName(name) = PluginName::from_request_parts(parts, sup).await?;
        if sup.contains(&name) {
            Ok(KnownPlugin(name))
        } else {
            Err(ApiError::NoSuchPlugin(name))
        }
    }
}

/// axum's `Path`, answering a bad parameter as [`ApiError::Path`].
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(t) = axum::extract::Path::from_request_parts(parts, state).await?;
        Ok(Path(t))
    }
}

/// axum's `Query`, answering a bad query as [`ApiError::Query`].
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(t) =
            axum::extract::Query::from_request_parts(parts, state).await?;
        Ok(Query(t))
    }
}
