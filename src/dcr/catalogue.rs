//! The catalogue of known MCP clients (`conf/known-clients.toml`, compiled in): their names,
//! redirect URI patterns, Client ID Metadata Document URLs and the source of each fact.
//!
//! Uses: the strict impersonation check (a registration named like a catalogued client must
//! use that client's redirect URIs), `redirect_host_allow` presets (`"known:<id>"`), the
//! `known_client` label of metrics and audit lines, and the per-client rate-limit key of
//! hosted clients. Imports only [`super::host`].

use std::sync::OnceLock;

use serde::Deserialize;

use super::host::is_loopback_host_literal;

/// The catalogue file, as shipped.
pub const CATALOGUE_TOML: &str = include_str!("../../conf/known-clients.toml");

/// Prefix of a `redirect_host_allow` entry naming a catalogue entry: `"known:claude"`.
pub const PRESET_PREFIX: &str = "known:";

/// One `[[client]]` of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownClient {
    pub id: String,
    pub names: Vec<String>,
    pub redirect_prefixes: Vec<String>,
    pub loopback: bool,
    pub hosted: bool,
    pub cimd_urls: Vec<String>,
    pub sources: Vec<String>,
    /// `names`, confusable-folded (filled in after parsing).
    #[serde(skip)]
    folded_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    client: Vec<KnownClient>,
}

/// Parses a catalogue file and checks its entries: unique ids, at least one name, every
/// redirect prefix `scheme://host/...` (so a prefix cannot match another host), every CIMD URL
/// https, at least one source.
pub fn parse_catalogue(text: &str) -> Result<Vec<KnownClient>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out: Vec<KnownClient> = Vec::with_capacity(file.client.len());
    for mut c in file.client {
        if c.id.is_empty() || !c.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(format!("client id {:?}: lower-case letters, digits and '-' only", c.id));
        }
        if out.iter().any(|o| o.id == c.id) {
            return Err(format!("client id {:?} appears twice", c.id));
        }
        if c.names.is_empty() || c.names.iter().any(|n| fold(n).is_empty()) {
            return Err(format!("client {:?}: needs non-empty names", c.id));
        }
        if c.sources.is_empty() {
            return Err(format!("client {:?}: every fact needs a source", c.id));
        }
        for p in &c.redirect_prefixes {
            let ok = p.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && rest.find('/').is_some_and(|slash| slash > 0 && !rest[..slash].contains(['@', '*', '?', '#']))
            });
            if !ok {
                return Err(format!("client {:?}: redirect prefix {p:?} must be scheme://host/path", c.id));
            }
        }
        if let Some(u) = c.cimd_urls.iter().find(|u| !u.starts_with("https://")) {
            return Err(format!("client {:?}: CIMD URL {u:?} must be https", c.id));
        }
        c.folded_names = c.names.iter().map(|n| fold(n)).collect();
        out.push(c);
    }
    Ok(out)
}

/// The shipped catalogue.
pub fn catalogue() -> &'static [KnownClient] {
    static CAT: OnceLock<Vec<KnownClient>> = OnceLock::new();
    // The file is compiled in and parsed by a unit test: it cannot fail at run time.
    CAT.get_or_init(|| parse_catalogue(CATALOGUE_TOML).expect("conf/known-clients.toml parses (tested)"))
}

/// The entry with this id.
pub fn find(id: &str) -> Option<&'static KnownClient> {
    catalogue().iter().find(|c| c.id == id)
}

/// The entry whose Client ID Metadata Document is at `url`.
pub fn by_cimd_url(url: &str) -> Option<&'static KnownClient> {
    catalogue().iter().find(|c| c.cimd_urls.iter().any(|u| u == url))
}

/// UTS #39 skeleton, lower-cased, whitespace runs as one space (the folding `reserved_names`
/// uses too).
pub(crate) fn fold(s: &str) -> String {
    if let Some(f) = fold_ascii(s) {
        return f;
    }
    let first: String = unicode_security::skeleton(s).collect();
    let lower = first.to_lowercase();
    let second: String = unicode_security::skeleton(&lower).collect();
    second.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The skeleton of each ASCII character, when it is ASCII itself (`None` otherwise).
fn ascii_skeletons() -> &'static [Option<String>; 128] {
    static TABLE: OnceLock<[Option<String>; 128]> = OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|b| {
            let c = char::from(b as u8);
            let sk: String = unicode_security::skeleton(c.encode_utf8(&mut [0u8; 4])).collect();
            sk.is_ascii().then_some(sk)
        })
    })
}

/// [`fold`] of an ASCII string from a per-character table — the common case, and the costly one
/// when every character is looked up in the confusables table on every registration. For ASCII
/// input whose characters' skeletons are ASCII, the skeleton is the concatenation of theirs
/// (NFD changes nothing and no combining mark can reorder across them); `None` otherwise.
fn fold_ascii(s: &str) -> Option<String> {
    if !s.is_ascii() {
        return None;
    }
    let table = ascii_skeletons();
    let pass = |text: &str| -> Option<String> {
        let mut out = String::with_capacity(text.len());
        for b in text.bytes() {
            out.push_str(table[usize::from(b)].as_deref()?);
        }
        Some(out)
    };
    let lower = pass(s)?.to_lowercase();
    let second = pass(&lower)?;
    Some(second.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `needle` occurs in `hay` as whole words (neither neighbour alphanumeric).
fn contains_word(hay: &str, needle: &str) -> bool {
    let mut from = 0;
    while let Some(i) = hay[from..].find(needle) {
        let start = from + i;
        let end = start + needle.len();
        let before = hay[..start].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let after = hay[end..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        if before && after {
            return true;
        }
        from = start + needle.chars().next().map_or(1, char::len_utf8);
    }
    false
}

impl KnownClient {
    /// `client_name` (any case, any confusable spelling) contains one of the entry's names as
    /// words.
    pub fn name_matches(&self, client_name: &str) -> bool {
        self.folded_name_matches(&fold(client_name))
    }

    /// [`KnownClient::name_matches`] of a name already [`fold`]ed: the skeleton is the costly
    /// part (~20 % of a registration's CPU when it was computed once per catalogue entry), so a
    /// registration's name is folded once and compared with every entry.
    fn folded_name_matches(&self, folded: &str) -> bool {
        self.folded_names.iter().any(|n| contains_word(folded, n))
    }

    /// The redirect URI is one this client uses: one of its prefixes (scheme and host
    /// case-insensitive, as URIs compare them), or http on a loopback host when the client
    /// uses loopback redirects.
    pub fn fits(&self, uri: &str) -> bool {
        self.fits_prefix(uri) || (self.loopback && is_http_loopback(uri))
    }

    fn fits_prefix(&self, uri: &str) -> bool {
        self.redirect_prefixes.iter().any(|p| {
            // End of `scheme://host[:port]` (parse_catalogue made sure a '/' follows).
            let start = p.find("://").map_or(0, |i| i + 3);
            let authority_end = start + p[start..].find('/').unwrap_or(p.len() - start);
            uri.len() >= p.len()
                && uri.is_char_boundary(authority_end)
                && uri[..authority_end].eq_ignore_ascii_case(&p[..authority_end])
                && uri.get(authority_end..p.len()) == Some(&p[authority_end..])
        })
    }

    /// Whether the entry can judge redirect URIs at all (an entry without patterns cannot).
    fn has_patterns(&self) -> bool {
        !self.redirect_prefixes.is_empty() || self.loopback
    }

    /// The https hosts of the entry's redirect prefixes (ASCII lower case): what a
    /// `known:<id>` preset adds to `redirect_host_allow`.
    pub fn https_hosts(&self) -> impl Iterator<Item = String> + '_ {
        self.redirect_prefixes.iter().filter_map(|p| {
            let rest = p.strip_prefix("https://")?;
            Some(rest[..rest.find('/')?].to_ascii_lowercase())
        })
    }
}

/// `http://<loopback literal>[:port]/...`.
fn is_http_loopback(uri: &str) -> bool {
    let Some(rest) = uri.get(..7).filter(|s| s.eq_ignore_ascii_case("http://")).map(|_| &uri[7..]) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |e| &authority[..=e])
    } else {
        authority.split(':').next().unwrap_or("")
    };
    is_loopback_host_literal(host)
}

/// The catalogue entry a registration (or a Client ID Metadata Document) impersonates: its
/// `client_name` matches entries that have redirect patterns, and no such entry uses all of
/// its redirect URIs. `None` when the name matches no entry, when one matching entry fits, or
/// when there are no redirect URIs (nothing to phish with).
pub fn impersonated(client_name: Option<&str>, redirect_uris: &[&str]) -> Option<&'static KnownClient> {
    let name = client_name?;
    if redirect_uris.is_empty() {
        return None;
    }
    let mut first = None;
    let folded = fold(name);
    for c in catalogue().iter().filter(|c| c.has_patterns() && c.folded_name_matches(&folded)) {
        if redirect_uris.iter().all(|u| c.fits(u)) {
            return None;
        }
        first.get_or_insert(c);
    }
    first
}

/// The catalogue entry a registration comes from: every redirect URI is the entry's, and
/// either its name matches or (for a hosted client) every redirect URI is one of the entry's
/// own https prefixes, which no one else can receive codes at. The `known_client` label.
pub fn identify(client_name: Option<&str>, redirect_uris: &[&str]) -> Option<&'static KnownClient> {
    if redirect_uris.is_empty() {
        return None;
    }
    let folded = client_name.map(fold);
    catalogue().iter().find(|c| {
        c.has_patterns()
            && redirect_uris.iter().all(|u| c.fits(u))
            && (folded.as_deref().is_some_and(|n| c.folded_name_matches(n))
                || (c.hosted && redirect_uris.iter().all(|u| c.fits_prefix(u))))
    })
}

/// The rate-limit key of a registration proven to come from a catalogued hosted client (all
/// its redirect URIs on the client's own https prefixes, whatever its name): the entry's id.
/// Such clients register for all their users from a few shared addresses; counting them per
/// address would throttle everyone at once.
pub fn hosted_rate_key(redirect_uris: &[&str]) -> Option<&'static str> {
    if redirect_uris.is_empty() {
        return None;
    }
    catalogue().iter().find(|c| c.hosted && redirect_uris.iter().all(|u| c.fits_prefix(u))).map(|c| c.id.as_str())
}

/// `redirect_host_allow` with every `known:<id>` preset replaced by that entry's https hosts.
/// An unknown id expands to nothing (`Policy::validate` reports it).
pub(crate) fn preset_hosts(pattern: &str) -> Option<Vec<String>> {
    let id = pattern.strip_prefix(PRESET_PREFIX)?;
    Some(find(id).map_or_else(Vec::new, |c| c.https_hosts().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_catalogue_parses_and_names_the_issue_clients() {
        let cat = parse_catalogue(CATALOGUE_TOML).unwrap();
        for id in ["claude", "claude-code", "chatgpt", "cursor", "vscode", "cline", "codex", "windsurf"] {
            assert!(cat.iter().any(|c| c.id == id), "{id}");
        }
        assert_eq!(catalogue().len(), cat.len());
        assert_eq!(by_cimd_url("https://vscode.dev/oauth/client-metadata.json").map(|c| c.id.as_str()), Some("vscode"));
    }

    #[test]
    fn bad_catalogues() {
        let entry = |extra: &str| {
            format!("[[client]]\nid = \"x\"\nnames = [\"X\"]\nloopback = false\nhosted = false\ncimd_urls = []\nsources = [\"s\"]\n{extra}")
        };
        assert!(parse_catalogue(&entry("redirect_prefixes = [\"https://a.example/cb\"]")).is_ok());
        for bad in
            ["https://a.example", "https://a.example?x/", "https:///cb", "https://u@a.example/cb", "a.example/cb"]
        {
            let e = parse_catalogue(&entry(&format!("redirect_prefixes = [{bad:?}]"))).unwrap_err();
            assert!(e.contains("scheme://host/path"), "{bad}: {e}");
        }
        let twice = format!("{}\n{}", entry("redirect_prefixes = []"), entry("redirect_prefixes = []"));
        assert!(parse_catalogue(&twice).unwrap_err().contains("twice"));
        assert!(parse_catalogue(&entry("redirect_prefixes = []\nextra = 1")).is_err());
    }

    #[test]
    fn names_fold_confusables_and_match_words() {
        let claude = find("claude").unwrap();
        // The ASCII table gives what the general path gives, for every ASCII character.
        for b in 0u8..128 {
            let text = format!("Ab{}c d  {}", char::from(b), char::from(b));
            let general: String = {
                let first: String = unicode_security::skeleton(&text).collect();
                let second: String = unicode_security::skeleton(&first.to_lowercase()).collect();
                second.split_whitespace().collect::<Vec<_>>().join(" ")
            };
            assert_eq!(fold(&text), general, "{b}");
        }
        assert!(claude.name_matches("Claude"));
        assert!(claude.name_matches("CLAUDE for Work"));
        // Cyrillic С (U+0421) and а (U+0430).
        assert!(claude.name_matches("\u{421}l\u{430}ude"));
        assert!(claude.name_matches("Claude Code (acme)"));
        assert!(!claude.name_matches("Claudette"));
        assert!(!claude.name_matches("MyApp"));
        let chatgpt = find("chatgpt").unwrap();
        assert!(chatgpt.name_matches("ChatGPT connector"));
        // Zero-width and full-width tricks are human_text's to refuse; the skeleton folds
        // full-width letters.
        assert!(chatgpt.name_matches("\u{ff23}hatGPT"));
    }

    #[test]
    fn fits_and_presets() {
        let cursor = find("cursor").unwrap();
        assert!(cursor.fits("cursor://anysphere.cursor-mcp/oauth/callback"));
        assert!(cursor.fits("https://WWW.cursor.com/agents/mcp/oauth/callback"));
        assert!(cursor.fits("http://localhost:8787/callback"));
        assert!(cursor.fits("http://[::1]:9/cb"));
        assert!(!cursor.fits("https://www.cursor.com.evil.example/agents/mcp/oauth/callback"));
        assert!(!cursor.fits("https://www.cursor.com/Agents/mcp/oauth/callback"));
        assert!(!cursor.fits("http://localhost.evil.example/cb"));
        assert!(!cursor.fits("http://u@localhost/cb"));
        assert!(!cursor.fits("https://localhost/cb"));
        assert_eq!(preset_hosts("known:chatgpt"), Some(vec!["chatgpt.com".into(), "chatgpt.com".into()]));
        assert_eq!(preset_hosts("known:nope"), Some(vec![]));
        assert_eq!(preset_hosts("chatgpt.com"), None);
    }

    #[test]
    fn impersonation_and_identity() {
        let ev = ["https://evil.example/cb"];
        assert_eq!(impersonated(Some("Claude"), &ev).map(|c| c.id.as_str()), Some("claude"));
        assert_eq!(impersonated(Some("\u{421}laude"), &ev).map(|c| c.id.as_str()), Some("claude"));
        assert_eq!(
            impersonated(Some("Cursor"), &["http://127.0.0.1:1/cb", "https://evil.example/cb"]).map(|c| c.id.as_str()),
            Some("cursor")
        );
        // Genuine shapes.
        assert_eq!(impersonated(Some("Claude"), &["https://claude.ai/api/mcp/auth_callback"]), None);
        assert_eq!(impersonated(Some("Claude Code (docs)"), &["http://localhost:5/callback"]), None);
        assert_eq!(impersonated(Some("Windsurf"), &ev), None, "no patterns: not judged");
        assert_eq!(impersonated(Some("Acme"), &ev), None);
        assert_eq!(impersonated(Some("Claude"), &[]), None);
        // Identity.
        assert_eq!(
            identify(Some("Claude"), &["https://claude.ai/api/mcp/auth_callback"]).map(|c| c.id.as_str()),
            Some("claude")
        );
        assert_eq!(
            identify(None, &["https://chatgpt.com/connector/oauth/abc"]).map(|c| c.id.as_str()),
            Some("chatgpt")
        );
        assert_eq!(
            identify(Some("Cline"), &["http://127.0.0.1:1456/mcp/oauth/callback"]).map(|c| c.id.as_str()),
            Some("cline")
        );
        assert_eq!(identify(None, &["http://127.0.0.1:1456/mcp/oauth/callback"]), None, "loopback proves nothing");
        assert_eq!(hosted_rate_key(&["https://claude.com/api/mcp/auth_callback"]), Some("claude"));
        assert_eq!(hosted_rate_key(&["https://claude.com/api/mcp/auth_callback", "http://127.0.0.1/cb"]), None);
        assert_eq!(hosted_rate_key(&["cursor://anysphere.cursor-mcp/oauth/callback"]), None);
    }
}
