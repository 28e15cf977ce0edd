//! Who is asking: the API key's id, its tenant and its scopes. The server
//! authenticates; the control layer only reads this.

use mds_core::scopes::Scopes;

use crate::{ControlError, ControlResult};

#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    /// The key's name, as its owner gave it (for the audit log).
    pub key_name: String,
    pub tenant_id: String,
    pub scopes: Scopes,
}

impl Caller {
    pub fn require(&self, scope: &str) -> ControlResult<()> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(ControlError::Forbidden {
                scope: scope.to_string(),
                details: Some(serde_json::json!({ "required_scope": scope })),
            })
        }
    }
}
