//! Software statements (RFC 7591 §2.3): signed JWTs whose claims are client metadata vouched
//! for by a trusted issuer.
//!
//! [`StatementVerifier`] holds the public keys of the `[[dcr.software_statement_issuers]]`
//! (built once per configuration snapshot) and verifies a statement; [`Verified::merge_into`]
//! merges its claims over the plain members. The pipeline (`check_with`) then runs the normal
//! validation on the result.
//!
//! Signatures are checked with `jsonwebtoken` (keys from `DecodingKey::from_jwk`,
//! `jsonwebtoken::crypto::verify`); the JOSE header and the claims are read by this module
//! (the claims with the same strict JSON reader as the request body), so that the rules below
//! are ours and not a library's defaults:
//!
//! - `alg` `none` and the HMAC algorithms are never accepted; `alg` must be one of the
//!   issuer's `algorithms`, and the key must be of that algorithm's type (and curve);
//! - the key is the one named by `kid` when the header has one, else every key of the right
//!   type is tried; keys in the header (`jwk`, `jku`, `x5u`, `x5c`) are ignored;
//! - a `crit` header is refused (no extension is understood);
//! - `exp`, `nbf` and `iat` are optional; when present they must be numbers and the
//!   statement must be current (with `software_statement_leeway_seconds` of clock skew).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::error::{ErrorCode, RegistrationError};
use super::json;
use super::policy::StatementIssuer;

/// JWT registered claims (RFC 7519 §4.1) describe the statement, not the client: never merged.
const REGISTERED_CLAIMS: [&str; 7] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// Private or symmetric key members (RFC 7518 §6): a trusted JWKS holds public keys only.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Nesting allowed in a JOSE header (`jwk` members, `x5c` arrays).
const MAX_HEADER_DEPTH: usize = 8;

/// Smallest RSA modulus accepted (ring refuses smaller ones anyway).
const MIN_RSA_BYTES: usize = 256;

/// Key type (and curve) an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
    P384,
    Ed25519,
}

fn family_of(alg: Algorithm) -> Option<Family> {
    Some(match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Family::Rsa,
        Algorithm::ES256 => Family::P256,
        Algorithm::ES384 => Family::P384,
        Algorithm::EdDSA => Family::Ed25519,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return None,
    })
}

/// Parses one entry of an issuer's `algorithms`: asymmetric JWS algorithms only.
pub(crate) fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("\"none\" is not allowed (statements must be signed)".into());
    }
    match Algorithm::from_str(name) {
        Ok(a) if family_of(a).is_some() => Ok(a),
        Ok(_) => Err(format!("{name:?} is not allowed (HMAC needs a shared secret; use a public-key algorithm)")),
        Err(_) => Err(format!(
            "unsupported algorithm {:?} (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)",
            name.chars().take(32).collect::<String>()
        )),
    }
}

/// One verification key of an issuer.
struct Key {
    kid: Option<String>,
    /// The JWK's own `alg`, which then is the only algorithm it verifies.
    alg: Option<Algorithm>,
    family: Family,
    key: DecodingKey,
}

/// Reads a JWKS document. Errors are `keys[j]: reason` (or a reason about the document).
/// Keys for other uses (`"use": "enc"`, `key_ops` without `verify`, an encryption `alg`) are
/// skipped; malformed, private, symmetric or unsupported keys are errors.
fn parse_jwks(doc: &Value) -> Result<Vec<Key>, Vec<String>> {
    let Some(keys) = doc.as_object().and_then(|o| o.get("keys")).and_then(Value::as_array) else {
        return Err(vec!["must be a JSON object with a \"keys\" array".into()]);
    };
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for (j, k) in keys.iter().enumerate() {
        match parse_key(k) {
            Ok(Some(key)) => out.push(key),
            Ok(None) => {}
            Err(e) => errs.push(format!("keys[{j}]: {e}")),
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

fn parse_key(k: &Value) -> Result<Option<Key>, String> {
    let obj = k.as_object().ok_or("must be a JSON object")?;
    for m in PRIVATE_MEMBERS {
        if obj.contains_key(m) {
            return Err(format!("must not contain private or symmetric key material ({m:?})"));
        }
    }
    let text = |name: &str| -> Result<Option<&str>, String> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{name:?} must be a string")),
        }
    };
    if text("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or("\"key_ops\" must be an array")?;
        if !ops.iter().any(|o| o == "verify") {
            return Ok(None);
        }
    }
    let alg = match text("alg")? {
        None => None,
        Some(a) if matches!(a, "RSA1_5" | "RSA-OAEP" | "RSA-OAEP-256" | "ECDH-ES") || a.starts_with("ECDH-ES+") => {
            return Ok(None)
        }
        Some(a) => Some(parse_algorithm(a).map_err(|e| format!("alg: {e}"))?),
    };
    let kid = text("kid")?.map(str::to_string);
    let b64 = |name: &str| -> Result<Vec<u8>, String> {
        let s = text(name)?.ok_or_else(|| format!("missing {name:?}"))?;
        URL_SAFE_NO_PAD.decode(s).map_err(|_| format!("{name:?} is not unpadded base64url"))
    };
    let family = match (text("kty")?, text("crv")?) {
        (Some("RSA"), _) => {
            let n = b64("n")?;
            let e = b64("e")?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_BYTES {
                return Err(format!("RSA modulus has {} bits, at least 2048 are required", significant * 8));
            }
            if e.iter().all(|b| *b == 0) {
                return Err("RSA exponent is zero".into());
            }
            Family::Rsa
        }
        (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
            let (family, len) = if crv == "P-256" { (Family::P256, 32) } else { (Family::P384, 48) };
            if b64("x")?.len() != len || b64("y")?.len() != len {
                return Err(format!("x and y must be {len} bytes for {crv}"));
            }
            family
        }
        (Some("EC"), crv) => return Err(format!("unsupported curve {:?} (P-256 or P-384)", crv.unwrap_or(""))),
        (Some("OKP"), Some("Ed25519")) => {
            if b64("x")?.len() != 32 {
                return Err("x must be 32 bytes for Ed25519".into());
            }
            Family::Ed25519
        }
        (Some("OKP"), crv) => return Err(format!("unsupported curve {:?} (Ed25519)", crv.unwrap_or(""))),
        (Some(kty), _) => {
            return Err(format!("unsupported kty {:?} (RSA, EC or OKP)", kty.chars().take(16).collect::<String>()))
        }
        (None, _) => return Err("missing \"kty\"".into()),
    };
    if let Some(a) = alg {
        if family_of(a) != Some(family) {
            return Err(format!("alg {a:?} does not fit the key type"));
        }
    }
    let jwk: Jwk = serde_json::from_value(k.clone()).map_err(|e| format!("not a valid JWK ({e})"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("not a usable key ({e})"))?;
    Ok(Some(Key { kid, alg, family, key }))
}

/// Configuration checks of one issuer, for [`Policy::validate`]. Each string is a suffix of
/// `dcr.software_statement_issuers[i]` (`.issuer: ...`, `: exactly one of ...`).
pub(crate) fn validate_issuer(iss: &StatementIssuer, earlier: &[StatementIssuer]) -> Vec<String> {
    let mut errs = Vec::new();
    if iss.issuer.is_empty() {
        errs.push(".issuer: must not be empty".into());
    } else if let Some(j) = earlier.iter().position(|e| e.issuer == iss.issuer) {
        errs.push(format!(".issuer: duplicate of dcr.software_statement_issuers[{j}]"));
    }
    match (&iss.jwks_file, &iss.jwks) {
        (Some(_), Some(_)) | (None, None) => errs.push(": exactly one of jwks_file and jwks must be set".into()),
        (Some(f), None) if f.is_empty() => errs.push(".jwks_file: must not be empty".into()),
        _ => {}
    }
    let algs = algorithms(iss, &mut errs);
    if let Some(doc) = &iss.jwks {
        match parse_jwks(doc) {
            Err(e) => errs.extend(e.into_iter().map(|e| {
                if e.starts_with("keys[") {
                    format!(".jwks.{e}")
                } else {
                    format!(".jwks: {e}")
                }
            })),
            Ok(keys) => {
                if let Err(e) = usable(&keys, &algs) {
                    errs.push(format!(".jwks: {e}"));
                }
            }
        }
    }
    errs
}

fn algorithms(iss: &StatementIssuer, errs: &mut Vec<String>) -> Vec<Algorithm> {
    if iss.algorithms.is_empty() {
        errs.push(".algorithms: must not be empty (e.g. [\"ES256\", \"RS256\"])".into());
    }
    let mut out = Vec::new();
    for (k, name) in iss.algorithms.iter().enumerate() {
        match parse_algorithm(name) {
            Ok(a) => out.push(a),
            Err(e) => errs.push(format!(".algorithms[{k}]: {e}")),
        }
    }
    out
}

/// At least one key must verify at least one of the algorithms.
fn usable(keys: &[Key], algs: &[Algorithm]) -> Result<(), String> {
    if algs.is_empty() || keys.iter().any(|k| algs.iter().any(|a| k.fits(*a))) {
        Ok(())
    } else {
        Err("no signing key in the JWKS can verify any of the issuer's algorithms".into())
    }
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        family_of(alg) == Some(self.family) && self.alg.is_none_or(|a| a == alg)
    }
}

struct Issuer {
    algorithms: Vec<Algorithm>,
    keys: Vec<Key>,
}

/// The trusted statement issuers and their keys. Built once per configuration snapshot;
/// `Send + Sync`, cheap to share behind an `Arc`.
pub struct StatementVerifier {
    issuers: HashMap<String, Issuer>,
}

impl fmt::Debug for StatementVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (name, iss) in &self.issuers {
            m.entry(name, &format_args!("{} key(s), {:?}", iss.keys.len(), iss.algorithms));
        }
        m.finish()
    }
}

/// A statement that passed [`StatementVerifier::verify`].
pub(crate) struct Verified {
    issuer: String,
    claims: Map<String, Value>,
}

impl Verified {
    /// Merges the vouched claims over the registration's own members and returns the issuer.
    ///
    /// A vouched member wins over every language-tagged variant the client added next to it
    /// (`client_name#en` beside a replayed statement's `client_name` would otherwise put the
    /// client's text on a localized consent screen). JWT registered claims and a nested
    /// `software_statement` are never merged.
    pub(crate) fn merge_into(self, input: &mut Map<String, Value>) -> String {
        let vouched: Vec<String> = self.claims.keys().filter(|k| !k.contains('#')).cloned().collect();
        input.retain(|k, _| match k.split_once('#') {
            Some((base, _)) => !vouched.iter().any(|b| b == base),
            None => true,
        });
        for (name, value) in self.claims {
            if !REGISTERED_CLAIMS.contains(&name.as_str()) && name != "software_statement" {
                // Replaces in place (member order kept) or appends.
                input.insert(name, value);
            }
        }
        self.issuer
    }
}

impl StatementVerifier {
    /// Builds the verifier from the configured issuers, each with its resolved JWKS document
    /// (the inline `jwks`, or the parsed contents of `jwks_file`). Errors name
    /// `dcr.software_statement_issuers[i]` (`i` is the position in `issuers`).
    pub fn new(issuers: &[(StatementIssuer, Value)]) -> Result<StatementVerifier, Vec<String>> {
        let mut errs = Vec::new();
        let mut map = HashMap::new();
        for (i, (iss, doc)) in issuers.iter().enumerate() {
            let at = format!("dcr.software_statement_issuers[{i}]");
            let where_keys = match &iss.jwks_file {
                Some(f) if iss.jwks.is_none() => format!("{at}.jwks_file ({f})"),
                _ => format!("{at}.jwks"),
            };
            let mut own = Vec::new();
            let algs = algorithms(iss, &mut own);
            errs.extend(own.into_iter().map(|e| format!("{at}{e}")));
            if iss.issuer.is_empty() {
                errs.push(format!("{at}.issuer: must not be empty"));
            }
            let keys = match parse_jwks(doc) {
                Ok(keys) => keys,
                Err(e) => {
                    errs.extend(e.into_iter().map(|e| format!("{where_keys}: {e}")));
                    continue;
                }
            };
            if let Err(e) = usable(&keys, &algs) {
                errs.push(format!("{where_keys}: {e}"));
            }
            if map.insert(iss.issuer.clone(), Issuer { algorithms: algs, keys }).is_some() {
                errs.push(format!("{at}.issuer: duplicate issuer"));
            }
        }
        if errs.is_empty() {
            Ok(StatementVerifier { issuers: map })
        } else {
            Err(errs)
        }
    }

    /// No trusted issuer: with a policy that names none either, statements are only
    /// shape-checked and forwarded (the pre-verification behaviour).
    pub fn empty() -> StatementVerifier {
        StatementVerifier { issuers: HashMap::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Trusted issuer names (for `check` output and metrics labels).
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.keys().map(String::as_str)
    }

    /// Verifies a compact JWS statement (see the module doc) at time `now`.
    pub(crate) fn verify(
        &self,
        statement: &str,
        leeway: u64,
        max_depth: usize,
        now: SystemTime,
    ) -> Result<Verified, RegistrationError> {
        let invalid = |reason: &str| {
            RegistrationError::new(ErrorCode::InvalidSoftwareStatement, format!("software_statement: {reason}"))
        };
        let parts: Vec<&str> = statement.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(invalid("not a compact JWS (three non-empty base64url parts)"));
        }
        let header = URL_SAFE_NO_PAD
            .decode(parts[0])
            .ok()
            .and_then(|h| json::read_object(&h, MAX_HEADER_DEPTH).ok())
            .ok_or_else(|| invalid("malformed JOSE header"))?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) if a.eq_ignore_ascii_case("none") => {
                return Err(invalid("unsigned statements (alg \"none\") are not accepted"))
            }
            Some(Value::String(a)) => match Algorithm::from_str(a) {
                Ok(alg) if family_of(alg).is_none() => return Err(invalid("HMAC-signed statements are not accepted")),
                Ok(alg) => alg,
                Err(_) => return Err(invalid("unsupported signature algorithm")),
            },
            _ => return Err(invalid("malformed JOSE header (alg)")),
        };
        if header.contains_key("crit") {
            return Err(invalid("critical header parameters are not supported"));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(invalid("malformed JOSE header (kid)")),
        };
        let claims = URL_SAFE_NO_PAD
            .decode(parts[1])
            .ok()
            .and_then(|c| json::read_object(&c, max_depth).ok())
            .ok_or_else(|| invalid("claims are not a valid JSON object"))?;
        let Some(Value::String(iss)) = claims.get("iss") else {
            return Err(invalid("no iss claim"));
        };
        let Some(issuer) = self.issuers.get(iss) else {
            return Err(RegistrationError::new(
                ErrorCode::UnapprovedSoftwareStatement,
                "software_statement: issuer is not trusted".into(),
            ));
        };
        if !issuer.algorithms.contains(&alg) {
            return Err(invalid("signature algorithm not allowed for this issuer"));
        }
        let mut candidates =
            issuer.keys.iter().filter(|k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid)).peekable();
        if candidates.peek().is_none() {
            return Err(invalid("no trusted key matches the statement's kid and alg"));
        }
        let message = &statement[..parts[0].len() + 1 + parts[1].len()];
        // `fits` guarantees the key type matches `alg` (jsonwebtoken panics otherwise).
        if !candidates.any(|k| jsonwebtoken::crypto::verify(parts[2], message.as_bytes(), &k.key, alg).unwrap_or(false))
        {
            return Err(invalid("signature verification failed"));
        }

        let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let leeway = leeway as f64;
        let date = |name: &str| -> Result<Option<f64>, RegistrationError> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or_else(|| invalid(&format!("{name} must be a NumericDate"))),
            }
        };
        if date("exp")?.is_some_and(|exp| now >= exp + leeway) {
            return Err(invalid("expired"));
        }
        if date("nbf")?.is_some_and(|nbf| now + leeway < nbf) {
            return Err(invalid("not yet valid (nbf)"));
        }
        if date("iat")?.is_some_and(|iat| iat > now + leeway) {
            return Err(invalid("issued in the future (iat)"));
        }
        Ok(Verified { issuer: iss.clone(), claims })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{EncodingKey, Header};
    use openssl::bn::BigNumContext;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use serde_json::json;

    use super::*;
    // The tests go through the pipeline: a statement is judged by what the registration becomes.
    use crate::dcr::pipeline::check_at;
    use crate::dcr::vocab::Kind;
    use crate::dcr::{check_with, Policy, SecurityMode};

    const ISSUER: &str = "https://statements.example.org";

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    struct Signer {
        jwk: Value,
        key: EncodingKey,
        alg: Algorithm,
    }

    fn rsa(kid: &str) -> Signer {
        let rsa = Rsa::generate(2048).unwrap();
        let jwk =
            json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())});
        Signer { jwk, key: EncodingKey::from_rsa_der(&rsa.private_key_to_der().unwrap()), alg: Algorithm::RS256 }
    }

    fn ec(kid: &str) -> Signer {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        let (mut x, mut y) = (openssl::bn::BigNum::new().unwrap(), openssl::bn::BigNum::new().unwrap());
        ec.public_key().affine_coordinates(&group, &mut x, &mut y, &mut BigNumContext::new().unwrap()).unwrap();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&x.to_vec_padded(32).unwrap()), "y": b64(&y.to_vec_padded(32).unwrap())});
        let der = PKey::from_ec_key(ec).unwrap().private_key_to_pkcs8().unwrap();
        Signer { jwk, key: EncodingKey::from_ec_der(&der), alg: Algorithm::ES256 }
    }

    fn ed() -> Signer {
        let k = PKey::generate_ed25519().unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&k.raw_public_key().unwrap())});
        Signer { jwk, key: EncodingKey::from_ed_der(&k.private_key_to_pkcs8().unwrap()), alg: Algorithm::EdDSA }
    }

    impl Signer {
        fn sign(&self, claims: &Value) -> String {
            let mut h = Header::new(self.alg);
            h.kid = self.jwk.get("kid").and_then(Value::as_str).map(str::to_string);
            jsonwebtoken::encode(&h, claims, &self.key).unwrap()
        }
    }

    fn issuer(name: &str, algs: &[&str]) -> StatementIssuer {
        StatementIssuer {
            issuer: name.into(),
            jwks_file: None,
            jwks: None,
            algorithms: algs.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// A verifier trusting ISSUER with the given keys, and a policy naming it.
    fn setup(keys: &[&Signer]) -> (Policy, StatementVerifier) {
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        let mut iss = issuer(ISSUER, &["RS256", "ES256", "EdDSA"]);
        iss.jwks = Some(jwks.clone());
        let policy = Policy { software_statement_issuers: vec![iss.clone()], ..Policy::default() };
        assert_eq!(policy.validate(), Ok(()));
        (policy, StatementVerifier::new(&[(iss, jwks)]).unwrap())
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({
            "iss": ISSUER, "sub": "sw-1", "iat": now() - 10, "exp": now() + 600, "jti": "j1",
            "software_id": "4NRB1-0XZABZI9E6-5SM3R",
            "client_name": "Vouched App",
            "redirect_uris": ["https://vouched.example.com/cb"],
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn body(statement: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "client_name": "Plain Name",
            "redirect_uris": ["https://plain.example.com/cb"],
            "software_statement": statement,
            "contacts": ["ops@plain.example.com"],
        }))
        .unwrap()
    }

    fn err(policy: &Policy, v: &StatementVerifier, statement: &str) -> RegistrationError {
        match check_with(&body(statement), policy, v) {
            Ok(n) => panic!("accepted: {}", String::from_utf8_lossy(&n.body)),
            Err(e) => e,
        }
    }

    const ISS: ErrorCode = ErrorCode::InvalidSoftwareStatement;

    #[test]
    fn valid_statement_merges_and_overrides_plain_members() {
        for signer in [rsa("r1"), ec("e1"), ed()] {
            let (policy, v) = setup(&[&signer]);
            let jws = signer.sign(&claims(json!({})));
            let n = check_with(&body(&jws), &policy, &v).unwrap_or_else(|e| panic!("{:?}: {e}", signer.alg));
            let d = &n.document;
            assert_eq!(d["client_name"], "Vouched App", "statement wins");
            assert_eq!(d["redirect_uris"], json!(["https://vouched.example.com/cb"]));
            assert_eq!(d["software_id"], "4NRB1-0XZABZI9E6-5SM3R", "non-registered claims are merged");
            assert_eq!(d["contacts"], json!(["ops@plain.example.com"]), "plain-only members kept");
            assert_eq!(d["software_statement"], jws.as_str(), "the statement is forwarded");
            for c in REGISTERED_CLAIMS {
                assert!(!d.contains_key(c), "{c} merged");
            }
            // Order: plain members in place, new claims appended.
            let keys: Vec<&str> = d.keys().map(String::as_str).collect();
            assert_eq!(&keys[..5], ["client_name", "redirect_uris", "software_statement", "contacts", "software_id"]);
            assert_eq!(n.client_name.as_deref(), Some("Vouched App"));
            assert_eq!(n.redirect_hosts, ["vouched.example.com"]);
            assert_eq!(n.software_statement_issuer.as_deref(), Some(ISSUER));
            // Idempotent: the forwarded body checks to itself.
            assert_eq!(check_with(&n.body, &policy, &v).unwrap().body, n.body);
        }
    }

    #[test]
    fn tagged_variants_of_vouched_members_are_dropped() {
        let signer = ec("e1");
        let (policy, v) = setup(&[&signer]);
        let jws = signer.sign(&claims(json!({})));
        let body = serde_json::to_vec(&json!({
            "client_name#en": "Spoofed Bank Login",
            "client_name#fr": "Banque",
            "tos_uri#en": "https://vouched.example.com/tos",
            "redirect_uris": ["https://vouched.example.com/cb"],
            "software_statement": jws,
        }))
        .unwrap();
        let n = check_with(&body, &policy, &v).unwrap();
        assert_eq!(n.document["client_name"], "Vouched App");
        assert!(!n.document.contains_key("client_name#en"), "{:?}", n.document);
        assert!(!n.document.contains_key("client_name#fr"));
        assert_eq!(
            n.document["tos_uri#en"], "https://vouched.example.com/tos",
            "members the statement does not set stay"
        );
    }

    #[test]
    fn key_selection_by_kid_and_type() {
        let (r1, r2, e1) = (rsa("r1"), rsa("r2"), ec("e1"));
        let (policy, v) = setup(&[&r1, &r2, &e1]);
        for s in [&r1, &r2, &e1] {
            assert!(check_with(&body(&s.sign(&claims(json!({})))), &policy, &v).is_ok());
        }
        // No kid: every key of the right type is tried.
        let mut h = Header::new(Algorithm::RS256);
        h.kid = None;
        let jws = jsonwebtoken::encode(&h, &claims(json!({})), &r2.key).unwrap();
        assert!(check_with(&body(&jws), &policy, &v).is_ok());
        // A kid naming another key: refused even though a key would verify.
        h.kid = Some("r1".into());
        let jws = jsonwebtoken::encode(&h, &claims(json!({})), &r2.key).unwrap();
        assert_eq!(err(&policy, &v, &jws).description, "software_statement: signature verification failed");
        h.kid = Some("nope".into());
        let jws = jsonwebtoken::encode(&h, &claims(json!({})), &r2.key).unwrap();
        assert_eq!(
            err(&policy, &v, &jws).description,
            "software_statement: no trusted key matches the statement's kid and alg"
        );
    }

    #[test]
    fn untrusted_issuer_is_unapproved() {
        let s = ec("e1");
        let (policy, v) = setup(&[&s]);
        let e = err(&policy, &v, &s.sign(&claims(json!({"iss": "https://evil.example"}))));
        assert_eq!(e.code, ErrorCode::UnapprovedSoftwareStatement);
        assert_eq!(e.description, "software_statement: issuer is not trusted");
        assert!(!e.description.contains("evil"));
        let e = err(&policy, &v, &s.sign(&claims(json!({"iss": null}))));
        assert_eq!((e.code, e.description.as_str()), (ISS, "software_statement: no iss claim"));
    }

    #[test]
    fn bad_signature_expired_not_yet_valid() {
        let (good, other) = (ec("e1"), ec("e1"));
        let (policy, v) = setup(&[&good]);
        let cases = [
            (other.sign(&claims(json!({}))), "software_statement: signature verification failed"),
            (good.sign(&claims(json!({"exp": now() - 120}))), "software_statement: expired"),
            (good.sign(&claims(json!({"nbf": now() + 3600}))), "software_statement: not yet valid (nbf)"),
            (good.sign(&claims(json!({"iat": now() + 3600}))), "software_statement: issued in the future (iat)"),
            (good.sign(&claims(json!({"exp": "tomorrow"}))), "software_statement: exp must be a NumericDate"),
        ];
        for (jws, want) in cases {
            let e = err(&policy, &v, &jws);
            assert_eq!((e.code, e.description.as_str()), (ISS, want));
            assert_eq!(e.to_json()["error"], "invalid_software_statement");
        }
        // Within the leeway: accepted.
        assert!(
            check_with(&body(&good.sign(&claims(json!({"exp": now() - 5, "nbf": now() + 5})))), &policy, &v).is_ok()
        );
        // A tampered payload fails the signature.
        let jws = good.sign(&claims(json!({})));
        let mut parts: Vec<String> = jws.split('.').map(str::to_string).collect();
        parts[1] = b64(&serde_json::to_vec(&claims(json!({"client_name": "Tampered"}))).unwrap());
        assert_eq!(err(&policy, &v, &parts.join(".")).description, "software_statement: signature verification failed");
        // Time checks use the given clock.
        let jws = good.sign(&claims(json!({})));
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(
            check_at(&body(&jws), &policy, &v, later, Kind::Registration).unwrap_err().description,
            "software_statement: expired"
        );
    }

    #[test]
    fn none_hmac_and_disallowed_algorithms_are_rejected() {
        let s = rsa("r1");
        let (policy, v) = setup(&[&s]);
        let payload = b64(&serde_json::to_vec(&claims(json!({}))).unwrap());
        let none = format!("{}.{payload}.c2ln", b64(br#"{"alg":"none"}"#));
        let e = err(&policy, &v, &none);
        assert_eq!(
            (e.code, e.description.as_str()),
            (ISS, "software_statement: unsigned statements (alg \"none\") are not accepted")
        );
        let unsecured = format!("{}.{payload}.", b64(br#"{"alg":"none"}"#));
        assert_eq!(err(&policy, &v, &unsecured).code, ISS);

        // HS256 with the RSA modulus as the "secret" (the classic key-confusion attack).
        let secret = s.jwk["n"].as_str().unwrap().as_bytes().to_vec();
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(json!({})),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        let e = err(&policy, &v, &hs);
        assert_eq!(
            (e.code, e.description.as_str()),
            (ISS, "software_statement: HMAC-signed statements are not accepted")
        );

        // RS384 is a fine algorithm but not one this issuer allows.
        let mut h = Header::new(Algorithm::RS384);
        h.kid = Some("r1".into());
        let jws = jsonwebtoken::encode(&h, &claims(json!({})), &s.key).unwrap();
        assert_eq!(
            err(&policy, &v, &jws).description,
            "software_statement: signature algorithm not allowed for this issuer"
        );

        // crit, bad header, bad claims.
        let crit = format!("{}.{payload}.c2ln", b64(br#"{"alg":"RS256","crit":["b64"],"b64":false}"#));
        assert_eq!(
            err(&policy, &v, &crit).description,
            "software_statement: critical header parameters are not supported"
        );
        let bad_header = format!("{}.{payload}.c2ln", b64(b"not json"));
        assert_eq!(err(&policy, &v, &bad_header).description, "software_statement: malformed JOSE header");
        let dup = format!("{}.{}.c2ln", b64(br#"{"alg":"RS256"}"#), b64(br#"{"iss":"a","iss":"b"}"#));
        assert_eq!(err(&policy, &v, &dup).description, "software_statement: claims are not a valid JSON object");
        assert_eq!(
            err(&policy, &v, "a.b").description,
            "software_statement: not a compact JWS (three non-empty base64url parts)"
        );
    }

    #[test]
    fn required_statement() {
        let s = ec("e1");
        let (mut policy, v) = setup(&[&s]);
        policy.require_software_statement = true;
        assert_eq!(policy.validate(), Ok(()));
        let plain = json!({"client_name": "x", "redirect_uris": ["https://a.example.com/cb"]});
        for b in [
            plain.clone(),
            json!({"client_name": "x", "redirect_uris": ["https://a.example.com/cb"], "software_statement": null}),
        ] {
            let e = check_with(&serde_json::to_vec(&b).unwrap(), &policy, &v).unwrap_err();
            assert_eq!((e.code, e.description.as_str()), (ISS, "software_statement: required"));
        }
        let e = check_with(br#"{"software_statement": 5}"#, &policy, &v).unwrap_err();
        assert_eq!((e.code, e.description.as_str()), (ISS, "software_statement: must be a string"));
        // Not required: a registration without a statement is judged as usual.
        policy.require_software_statement = false;
        assert!(check_with(&serde_json::to_vec(&plain).unwrap(), &policy, &v).is_ok());
    }

    #[test]
    fn statement_claims_go_through_normal_validation() {
        let s = ec("e1");
        let (policy, v) = setup(&[&s]);
        let e = err(&policy, &v, &s.sign(&claims(json!({"redirect_uris": ["javascript:alert(1)"]}))));
        assert_eq!(e.code, ErrorCode::InvalidRedirectUri);
        assert!(e.description.starts_with("redirect_uris[0]: scheme \"javascript\""), "{e}");
        let e = err(&policy, &v, &s.sign(&claims(json!({"grant_types": ["password"]}))));
        assert_eq!(e.code, ErrorCode::InvalidClientMetadata);
        // Server-only members in a statement are dropped like plain ones.
        let n = check_with(&body(&s.sign(&claims(json!({"client_secret": "s3cret"})))), &policy, &v).unwrap();
        assert!(n.dropped_members.contains(&"client_secret".to_string()));
        // A nested statement is not merged.
        let n = check_with(&body(&s.sign(&claims(json!({"software_statement": "x.y.z"})))), &policy, &v).unwrap();
        assert_ne!(n.document["software_statement"], "x.y.z");
        // Permissive mode still applies to the merged document.
        let p = Policy { security_mode: SecurityMode::Permissive, ..policy.clone() };
        let n = check_with(&body(&s.sign(&claims(json!({"x_vendor": 1})))), &p, &v).unwrap();
        assert_eq!(n.document["x_vendor"], 1);
    }

    #[test]
    fn unverified_pass_through_and_fail_closed() {
        let s = ec("e1");
        let jws = s.sign(&claims(json!({})));
        // No issuer anywhere: shape-checked and forwarded, claims not merged (old behaviour).
        let n = check_with(&body(&jws), &Policy::default(), &StatementVerifier::empty()).unwrap();
        assert_eq!(n.document["client_name"], "Plain Name");
        assert_eq!(n.software_statement_issuer, None);
        assert_eq!(crate::dcr::check(&body(&jws), &Policy::default()).unwrap(), n);
        // The policy names issuers but no verifier was built: every statement is unapproved.
        let (policy, _) = setup(&[&s]);
        assert_eq!(crate::dcr::check(&body(&jws), &policy).unwrap_err().code, ErrorCode::UnapprovedSoftwareStatement);
    }

    #[test]
    fn errors_never_echo_the_statement_or_claims() {
        let s = ec("e1");
        let (policy, v) = setup(&[&s]);
        let secretish = "Zq9SECRETVALUE";
        for jws in [
            s.sign(&claims(json!({"iss": secretish}))),
            s.sign(&claims(json!({"exp": secretish}))),
            ec("e1").sign(&claims(json!({"client_name": secretish}))),
            s.sign(&claims(json!({"exp": 1, "client_name": secretish}))),
        ] {
            let e = err(&policy, &v, &jws);
            let shown = format!("{e} {e:?} {}", e.to_json());
            assert!(!shown.contains(secretish) && !shown.contains(&jws[..20]), "{shown}");
        }
    }

    #[test]
    fn verifier_and_policy_validation_name_the_issuer() {
        let s = rsa("r1");
        let good = json!({"keys": [s.jwk.clone()]});
        let with = |algs: &[&str], jwks: Option<Value>, file: Option<&str>| StatementIssuer {
            jwks,
            jwks_file: file.map(str::to_string),
            ..issuer(ISSUER, algs)
        };
        let p = Policy {
            software_statement_issuers: vec![
                with(&["RS256"], Some(good.clone()), None),
                with(&["none", "HS256", "XX1", "ES256"], None, None),
                with(&[], Some(good.clone()), Some("k.json")),
                with(&["ES256"], Some(good.clone()), None),
                with(
                    &["RS256"],
                    Some(
                        json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "RSA", "n": "AQAB", "e": "AQAB"}, {"kty": "EC", "crv": "P-521", "x": "", "y": ""}, {"kty": "RSA", "use": "enc"}]}),
                    ),
                    None,
                ),
            ],
            registration: crate::dcr::RegistrationMode::Token,
            software_statement_leeway_seconds: 7200,
            ..Policy::default()
        };
        let errs = p.validate().unwrap_err();
        let want = [
            "dcr.token_file: required when dcr.registration = \"token\"",
            "dcr.software_statement_leeway_seconds: must be at most 3600",
            "dcr.software_statement_issuers[1].issuer: duplicate of dcr.software_statement_issuers[0]",
            "dcr.software_statement_issuers[1]: exactly one of jwks_file and jwks must be set",
            "dcr.software_statement_issuers[1].algorithms[0]: \"none\" is not allowed",
            "dcr.software_statement_issuers[1].algorithms[1]: \"HS256\" is not allowed",
            "dcr.software_statement_issuers[1].algorithms[2]: unsupported algorithm",
            "dcr.software_statement_issuers[2].issuer: duplicate",
            "dcr.software_statement_issuers[2]: exactly one of jwks_file and jwks",
            "dcr.software_statement_issuers[2].algorithms: must not be empty",
            "dcr.software_statement_issuers[3].issuer: duplicate",
            "dcr.software_statement_issuers[3].jwks: no signing key in the JWKS can verify",
            "dcr.software_statement_issuers[4].issuer: duplicate",
            "dcr.software_statement_issuers[4].jwks.keys[0]: must not contain private or symmetric key material (\"k\")",
            "dcr.software_statement_issuers[4].jwks.keys[1]: RSA modulus has 24 bits",
            "dcr.software_statement_issuers[4].jwks.keys[2]: unsupported curve \"P-521\"",
        ];
        for w in want {
            assert!(errs.iter().any(|e| e.starts_with(w)), "missing {w:?} in {errs:#?}");
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");

        // The verifier names the file for file-based JWKS.
        let iss = with(&["RS256"], None, Some("partner.jwks.json"));
        let errs =
            StatementVerifier::new(&[(issuer("a", &["RS256"]), good.clone()), (iss.clone(), json!({"keys": 1}))])
                .unwrap_err();
        assert_eq!(errs, ["dcr.software_statement_issuers[1].jwks_file (partner.jwks.json): must be a JSON object with a \"keys\" array"]);
        let v = StatementVerifier::new(&[(iss, good)]).unwrap();
        assert_eq!(v.issuers().collect::<Vec<_>>(), [ISSUER]);
        assert!(format!("{v:?}").contains("1 key(s)"));
        fn send_sync<T: Send + Sync>() {}
        send_sync::<StatementVerifier>();
    }

    #[test]
    fn policy_from_toml() {
        let s = ec("e1");
        let text = format!(
            r#"
            registration = "token"
            token_file = "tokens.toml"
            require_software_statement = true
            [[software_statement_issuers]]
            issuer = "{ISSUER}"
            algorithms = ["ES256"]
            jwks = {{ keys = [ {{ kty = "EC", crv = "P-256", kid = "e1", x = "{}", y = "{}" }} ] }}
            "#,
            s.jwk["x"].as_str().unwrap(),
            s.jwk["y"].as_str().unwrap()
        );
        let p: Policy = toml::from_str(&text).unwrap();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.registration, crate::dcr::RegistrationMode::Token);
        let iss = &p.software_statement_issuers[0];
        let v = StatementVerifier::new(&[(iss.clone(), iss.jwks.clone().unwrap())]).unwrap();
        assert!(check_with(&body(&s.sign(&claims(json!({})))), &p, &v).is_ok());
        assert!(toml::from_str::<Policy>("registration = \"closed\"").is_err());
        assert!(toml::from_str::<Policy>("[[software_statement_issuers]]\nissuer = \"x\"\nbogus = 1").is_err());
    }
}
