//! Certificates made for a test (no files shipped): self-signed, with a subjectAltName.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509};

/// A self-signed certificate (PEM) for `cn` (also its DNS subjectAltName) and its key (PEM).
pub fn self_signed(cn: &str) -> (Vec<u8>, Vec<u8>) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
    let san = SubjectAlternativeName::new().dns(cn).build(&b.x509v3_context(None, None)).unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (b.build().to_pem().unwrap(), key.private_key_to_pem_pkcs8().unwrap())
}

/// A GET over a fresh TLS handshake with `sni` (no certificate verification): the CN of the
/// certificate served, and the raw response.
pub fn https_get(addr: std::net::SocketAddr, sni: &str, host: &str, path: &str) -> (String, String) {
    https_raw(addr, sni, format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
}

/// Send `request` as is over TLS with `sni` (any certificate accepted): the server
/// certificate's CN and the whole answer.
pub fn https_raw(addr: std::net::SocketAddr, sni: &str, request: &[u8]) -> (String, String) {
    use std::io::{Read, Write};
    let mut c = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    c.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut cfg = c.build().configure().unwrap();
    cfg.set_verify_hostname(false);
    let mut s = cfg.connect(sni, tcp).unwrap();
    let cert = s.ssl().peer_certificate().expect("server certificate");
    let cn = String::from_utf8(cert.subject_name().entries().next().unwrap().data().as_slice().to_vec()).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (cn, String::from_utf8_lossy(&out).into_owned())
}

/// A CA (its certificate, PEM) and a leaf it signed for the IP address `ip` (an IP
/// subjectAltName, as a client connecting to an address checks it): `(ca, cert, key)`, PEM.
pub fn ca_and_leaf_for_ip(ip: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use openssl::x509::extension::{BasicConstraints, KeyUsage};
    let builder = |cn: &str, key: &PKey<openssl::pkey::Private>| {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let mut serial = BigNum::new().unwrap();
        serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap()).unwrap();
        b.set_subject_name(&name.build()).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
        b
    };
    let ca_key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut ca = builder("dcr-gateway test CA", &ca_key);
    let mut self_name = X509NameBuilder::new().unwrap();
    self_name.append_entry_by_text("CN", "dcr-gateway test CA").unwrap();
    ca.set_issuer_name(&self_name.build()).unwrap();
    ca.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
    ca.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().unwrap()).unwrap();
    ca.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = ca.build();

    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut leaf = builder(ip, &key);
    leaf.set_issuer_name(ca.subject_name()).unwrap();
    let san = SubjectAlternativeName::new().ip(ip).build(&leaf.x509v3_context(Some(&ca), None)).unwrap();
    leaf.append_extension(san).unwrap();
    leaf.sign(&ca_key, MessageDigest::sha256()).unwrap();
    (ca.to_pem().unwrap(), leaf.build().to_pem().unwrap(), key.private_key_to_pem_pkcs8().unwrap())
}
