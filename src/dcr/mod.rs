//! TEMPORARY interface stub (replaced by the real validator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode { Strict, Permissive }
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy { pub enabled: bool, pub security_mode: SecurityMode, pub max_body_bytes: usize, pub body_read_timeout_ms: u64 }
impl Default for Policy { fn default() -> Self { Policy { enabled: true, security_mode: SecurityMode::Strict, max_body_bytes: 16384, body_read_timeout_ms: 5000 } } }
impl Policy { pub fn validate(&self) -> Result<(), Vec<String>> { Ok(()) } }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode { InvalidRedirectUri, InvalidClientMetadata, InvalidSoftwareStatement, UnapprovedSoftwareStatement }
impl ErrorCode { pub fn as_str(self) -> &'static str { match self { ErrorCode::InvalidRedirectUri => "invalid_redirect_uri", ErrorCode::InvalidClientMetadata => "invalid_client_metadata", ErrorCode::InvalidSoftwareStatement => "invalid_software_statement", ErrorCode::UnapprovedSoftwareStatement => "unapproved_software_statement" } } }
#[derive(Debug, Clone)]
pub struct RegistrationError { pub code: ErrorCode, pub description: String }
pub struct Normalized { pub document: serde_json::Map<String, serde_json::Value>, pub body: Vec<u8>, pub client_name: Option<String>, pub redirect_hosts: Vec<String>, pub dropped_members: Vec<String>, pub removed_scopes: Vec<String> }
pub fn check(body: &[u8], _policy: &Policy) -> Result<Normalized, RegistrationError> {
    match serde_json::from_slice::<serde_json::Value>(body) { Ok(serde_json::Value::Object(m)) => Ok(Normalized { body: serde_json::to_vec(&m).unwrap_or_default(), document: m, client_name: None, redirect_hosts: vec![], dropped_members: vec![], removed_scopes: vec![] }), _ => Err(RegistrationError { code: ErrorCode::InvalidClientMetadata, description: "body: not a JSON object".into() }) }
}
