//! Small facts about this installation (for example, whether the first
//! admin key was minted).

use serde_json::Value;

use crate::{Result, Store};

impl Store {
    pub async fn setting(&self, key: &str) -> Result<Option<Value>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT value FROM settings WHERE key = $1", &[&key])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn set_setting(&self, key: &str, value: &Value) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                &[&key, value],
            )
            .await?;
        Ok(())
    }
}
