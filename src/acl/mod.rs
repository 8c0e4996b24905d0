//! TEMPORARY interface stub (replaced by the real engine).
use std::sync::Arc;
use crate::scope::Scope;
use crate::signals::Signals;
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction { Allow, Block }
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision { Allow, Block, Redirect(Arc<str>) }
#[derive(Debug, Clone)]
pub struct Verdict { pub decision: Decision, pub rule: Option<Arc<str>>, pub logged: Vec<Arc<str>> }
pub struct RuleSet { default_action: DefaultAction }
#[derive(Debug)]
pub struct AclErrors(pub Vec<AclError>);
#[derive(Debug)]
pub struct AclError { pub index: Option<usize>, pub id: Option<String>, pub field: String, pub message: String }
impl std::fmt::Display for AclErrors { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { for e in &self.0 { writeln!(f, "{}", e.message)?; } Ok(()) } }
impl RuleSet {
    pub fn load(_json: &[u8], default_action: DefaultAction) -> Result<RuleSet, AclErrors> { Ok(RuleSet { default_action }) }
    pub fn empty(default_action: DefaultAction) -> RuleSet { RuleSet { default_action } }
    pub fn evaluate(&self, _scope: Scope, _s: &Signals) -> Verdict { Verdict { decision: if self.default_action == DefaultAction::Allow { Decision::Allow } else { Decision::Block }, rule: None, logged: vec![] } }
    pub fn rule_count(&self) -> usize { 0 }
    pub fn entry_count(&self) -> usize { 0 }
    pub fn uses_geo_country(&self) -> bool { false }
    pub fn uses_geo_subdivision(&self) -> bool { false }
    pub fn uses_asn(&self) -> bool { false }
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> { std::iter::empty() }
}
impl std::fmt::Display for AclError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(&self.message) } }
