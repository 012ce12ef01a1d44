//! `GET /v1/models`: OpenAI's list shape.

use serde::{Deserialize, Serialize};

use crate::Extra;

/// `{"object":"list","data":[...]}`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelList {
    /// `"list"`.
    #[serde(default)]
    pub object: String,
    /// The models.
    #[serde(default)]
    pub data: Vec<Model>,
}

impl ModelList {
    /// A list of the given models.
    pub fn new(data: Vec<Model>) -> Self {
        ModelList {
            object: "list".to_owned(),
            data,
        }
    }
}

/// One model (for the Worker: one alias the caller may use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Model {
    /// The name to put in `model`.
    pub id: String,
    /// `"model"`.
    #[serde(default)]
    pub object: String,
    /// Creation time, seconds since the Unix epoch.
    #[serde(default)]
    pub created: u64,
    /// Who serves it.
    #[serde(default)]
    pub owned_by: String,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Model {
    /// A model entry.
    pub fn new(id: impl Into<String>, owned_by: impl Into<String>) -> Self {
        Model {
            id: id.into(),
            object: "model".to_owned(),
            created: 0,
            owned_by: owned_by.into(),
            extra: Extra::new(),
        }
    }
}
