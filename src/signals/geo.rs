//! TEMPORARY stub.
use std::net::IpAddr;
#[derive(Debug)]
pub struct GeoError(pub String);
impl std::fmt::Display for GeoError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(&self.0) } }
pub struct GeoDb;
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct GeoInfo { pub country: Option<String>, pub subdivisions: Vec<String> }
impl GeoDb { pub fn from_bytes(_b: Vec<u8>) -> Result<GeoDb, GeoError> { Ok(GeoDb) } pub fn database_type(&self) -> &str { "x" } pub fn has_subdivisions(&self) -> bool { false } pub fn lookup(&self, _ip: IpAddr) -> GeoInfo { GeoInfo::default() } }
pub struct AsnDb;
impl AsnDb { pub fn from_bytes(_b: Vec<u8>) -> Result<AsnDb, GeoError> { Ok(AsnDb) } pub fn lookup(&self, _ip: IpAddr) -> Option<u32> { None } }
