//! Who exists: the message-store asks the auth service which user ids are real before adding them.

use std::collections::HashSet;
use uuid::Uuid;

#[async_trait::async_trait]
pub trait UserDirectory: Send + Sync {
    /// The subset of `ids` that are existing users.
    async fn existing(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, String>;
}

/// Asks auth's internal `POST /internal/v1/users/lookup` (microservices).
pub struct HttpDirectory {
    http: reqwest::Client,
    url: String,
}

impl HttpDirectory {
    pub fn new(auth_url: &str, token: &chat_common::internal::InternalToken) -> Self {
        HttpDirectory {
            http: chat_authn::internal_client(token, std::time::Duration::from_secs(5)).build().expect("http client"),
            url: format!("{}/internal/v1/users/lookup", auth_url.trim_end_matches('/')),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Lookup {
    ids: Vec<Uuid>,
}

#[async_trait::async_trait]
impl UserDirectory for HttpDirectory {
    async fn existing(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, String> {
        let resp =
            self.http.post(&self.url).json(&Lookup { ids: ids.to_vec() }).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("auth lookup answered {}", resp.status()));
        }
        Ok(resp.json::<Lookup>().await.map_err(|e| e.to_string())?.ids.into_iter().collect())
    }
}
