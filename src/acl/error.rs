//! Load errors. Every problem in a rule file is collected; nothing stops at the first one.

use std::fmt;

/// One problem in a rule file.
///
/// `index` is the 0-based position of the rule in the file (`None` for problems with the
/// file as a whole, such as "not a JSON array", which display without a rule prefix); `id` is the rule's id (its explicit id, or
/// the generated `rule-<index>` when the rule has none; `None` when the id itself is
/// unusable); `field` is the path inside the rule object (`rule.match.ipv4_cidrs[2]`),
/// empty when the problem is the rule as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclError {
    pub index: Option<usize>,
    pub id: Option<String>,
    pub field: String,
    pub message: String,
}

impl AclError {
    pub(crate) fn file(field: impl Into<String>, message: impl Into<String>) -> AclError {
        AclError { index: None, id: None, field: field.into(), message: message.into() }
    }
}

impl fmt::Display for AclError {
    /// `rule 3 (id "block-x"): rule.match.ipv4_cidrs[2]: malformed CIDR "10.0.0.300/8"`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // File-level problems carry no rule prefix (callers prefix the file's path).
        match (self.index, &self.id) {
            (Some(i), Some(id)) => write!(f, "rule {i} (id {id:?}): ")?,
            (Some(i), None) => write!(f, "rule {i}: ")?,
            (None, Some(id)) => write!(f, "rule (id {id:?}): ")?,
            (None, None) => {}
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for AclError {}

/// All the problems found in a rule file, in file order. `Display` writes one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclErrors(pub Vec<AclError>);

impl AclErrors {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, AclError> {
        self.0.iter()
    }
}

impl fmt::Display for AclErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, e) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AclErrors {}

impl<'a> IntoIterator for &'a AclErrors {
    type Item = &'a AclError;
    type IntoIter = std::slice::Iter<'a, AclError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
