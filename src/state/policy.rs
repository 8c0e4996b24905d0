//! The effective `[dcr]` policy: the configuration's section with the tenant settings file
//! (`[admin] settings_file`, written by `PATCH /api/v2/tenants/settings`) laid over it.
//! Computed in one place so the running proxy, the admin API and the offline CLI agree.

use std::path::Path;

use super::settings::Overrides;
use crate::dcr::Policy;

/// The policy in force and what it was computed from.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The `[dcr]` section as configured, before the settings overlay.
    pub base: Policy,
    /// `base` with the settings file laid over it: what registrations are checked against.
    pub policy: Policy,
    /// The settings file's bytes (`None`: no file) and their SHA-256 (that of the empty string
    /// when there is no file), for the admin API's ETags and the reload guard.
    pub settings_bytes: Option<Vec<u8>>,
    pub settings_sha256: String,
}

/// Read the settings file at `settings_path` (absent = no overrides) and lay it over `base`.
/// Errors name the file and the setting.
pub fn effective(base: &Policy, settings_path: &Path) -> Result<Effective, Vec<String>> {
    let current = super::store::read(settings_path)
        .map_err(|e| vec![format!("{}: cannot read tenant settings: {e}", settings_path.display())])?;
    effective_from(base, settings_path, current.bytes)
}

/// [`effective`] over settings already read (`None`: none), e.g. from the registry store
/// (`[admin] store = "registry"`); errors name `source`.
pub fn effective_from(base: &Policy, source: &Path, bytes: Option<Vec<u8>>) -> Result<Effective, Vec<String>> {
    let overlay = Overrides::from_file_bytes(bytes.as_deref().unwrap_or_default())
        .and_then(|o| o.overlay(base))
        .map_err(|errs| errs.iter().map(|e| format!("{}: {e}", source.display())).collect::<Vec<_>>())?;
    Ok(Effective {
        base: base.clone(),
        policy: overlay,
        settings_sha256: super::store::sha256_hex(bytes.as_deref().unwrap_or_default()),
        settings_bytes: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_laid_over_the_configured_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenant-settings.json");
        let base = Policy::default();
        let none = effective(&base, &path).unwrap();
        assert!(none.policy.enabled && none.settings_bytes.is_none());
        std::fs::write(&path, br#"{"enable_dynamic_client_registration": false}"#).unwrap();
        let off = effective(&base, &path).unwrap();
        assert!(!off.policy.enabled, "the file wins");
        assert!(off.base.enabled, "the base is kept");
        assert_ne!(off.settings_sha256, none.settings_sha256);
        std::fs::write(&path, br#"{"enable_dynamic_client_registration": "yes"}"#).unwrap();
        let err = effective(&base, &path).unwrap_err();
        assert!(err[0].contains("tenant-settings.json"), "{err:?}");
    }
}
