//! One tenant and one workspace exist today. Attribution fields that clients
//! send (`workspace_id`, `external_*`) are stored and echoed, and never
//! decide access: the API key does.

pub const DEFAULT_TENANT_ID: &str = "ten_default";
pub const DEFAULT_WORKSPACE_ID: &str = "ws_default";

/// The environments every project is created with; the first is the default.
pub const PRODUCTION: &str = "production";
pub const STAGING: &str = "staging";
