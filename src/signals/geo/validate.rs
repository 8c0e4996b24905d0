//! The file-format validator: everything a lookup can touch is checked once, at load time
//! (see the module doc of `geo`). Works on the bytes alone; the reader is opened afterwards.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::GeoError;

pub(super) const METADATA_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";
/// Nesting limit (containers and pointers) for data values; GeoIP2 records nest ~4 deep.
const MAX_DEPTH: u32 = 32;
/// Values visited per record / per metadata, against crafted pointer fan-out.
const VALUE_BUDGET: u32 = 1_000_000;

fn invalid(msg: impl Into<String>) -> GeoError {
    GeoError::Invalid(msg.into())
}

/// Validates the whole database. Returns one representative address per distinct data
/// record reachable by lookups, for the callers' schema checks.
pub(super) fn validate(bytes: &[u8]) -> Result<Vec<IpAddr>, GeoError> {
    let marker =
        rfind(bytes, METADATA_MARKER).ok_or_else(|| invalid("no MaxMind DB metadata marker (not an .mmdb file?)"))?;
    let meta_buf = &bytes[marker + METADATA_MARKER.len()..];
    let mut budget = VALUE_BUDGET;
    let (meta, _) = walk(meta_buf, 0, 0, &mut budget, true).map_err(|e| invalid(format!("metadata: {e}")))?;
    let Some(Node::Map(meta)) = meta else {
        return Err(invalid("metadata is not a map"));
    };
    let field = |name: &str| meta.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let uint = |name: &str| match field(name) {
        Some(Node::Uint(n)) => Ok(*n),
        Some(_) => Err(invalid(format!("metadata {name} is not an unsigned integer"))),
        None => Err(invalid(format!("metadata has no {name}"))),
    };
    let major = uint("binary_format_major_version")?;
    if major != 2 {
        return Err(invalid(format!("unsupported binary format major version {major}")));
    }
    let ip_version = uint("ip_version")?;
    if ip_version != 4 && ip_version != 6 {
        return Err(invalid(format!("ip_version {ip_version} (must be 4 or 6)")));
    }
    let record_size = uint("record_size")?;
    if !matches!(record_size, 24 | 28 | 32) {
        return Err(invalid(format!("record_size {record_size} (must be 24, 28 or 32)")));
    }
    let node_count = uint("node_count")?;
    if node_count == 0 || node_count > u128::from(u32::MAX) {
        return Err(invalid(format!("node_count {node_count}")));
    }
    if !matches!(field("database_type"), Some(Node::Str)) {
        return Err(invalid("metadata database_type is missing or not a string"));
    }
    let (node_count, record_size) = (node_count as usize, record_size as usize);
    let tree_size = node_count * record_size / 4;
    if tree_size + 16 > marker {
        return Err(invalid(format!(
            "search tree of {node_count} nodes does not fit in the file ({} bytes before the metadata)",
            marker
        )));
    }
    let tree = &bytes[..tree_size];
    // The reader decodes records from here up to the end of the buffer.
    let data = &bytes[tree_size + 16..];
    walk_tree(tree, data, node_count, record_size, ip_version == 6).map_err(invalid)
}

pub(super) fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

fn read_record(tree: &[u8], record_size: usize, node: usize, side: usize) -> usize {
    let base = node * record_size / 4;
    let be = |b: &[u8]| b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
    match record_size {
        24 => be(&tree[base + side * 3..base + side * 3 + 3]),
        28 => {
            let middle = if side == 0 { tree[base + 3] >> 4 } else { tree[base + 3] & 0x0f };
            (usize::from(middle) << 24) | be(&tree[base + side * 4..base + side * 4 + 3])
        }
        _ => be(&tree[base + side * 4..base + side * 4 + 4]),
    }
}

/// Visits every node reachable from the root; checks every record value and the data
/// record it points at. Returns one address per distinct data record (the first path to
/// it), padded with zero bits.
fn walk_tree(
    tree: &[u8],
    data: &[u8],
    node_count: usize,
    record_size: usize,
    ipv6: bool,
) -> Result<Vec<IpAddr>, String> {
    let bits: u32 = if ipv6 { 128 } else { 32 };
    let mut visited = vec![false; node_count];
    visited[0] = true;
    let mut stack: Vec<(usize, u32, u128)> = vec![(0, 0, 0)];
    let mut seen: HashSet<usize> = HashSet::new();
    let mut reps = Vec::new();
    while let Some((node, depth, prefix)) = stack.pop() {
        for side in 0..2 {
            let value = read_record(tree, record_size, node, side);
            let child_prefix = if depth < 128 { prefix | ((side as u128) << (127 - depth)) } else { prefix };
            let child_depth = depth + 1;
            if value < node_count {
                if !visited[value] {
                    visited[value] = true;
                    stack.push((value, child_depth, child_prefix));
                }
            } else if value > node_count {
                let offset = value
                    .checked_sub(node_count + 16)
                    .ok_or_else(|| format!("node {node} points into the data section separator"))?;
                if offset >= data.len() {
                    return Err(format!("node {node} points past the end of the data section"));
                }
                if seen.insert(offset) {
                    let mut budget = VALUE_BUDGET;
                    walk(data, offset, 0, &mut budget, false)
                        .map_err(|e| format!("data record at offset {offset}: {e}"))?;
                    if child_depth <= bits {
                        reps.push(if ipv6 {
                            IpAddr::V6(Ipv6Addr::from(child_prefix))
                        } else {
                            IpAddr::V4(Ipv4Addr::from((child_prefix >> 96) as u32))
                        });
                    }
                }
            }
        }
    }
    Ok(reps)
}

/// The parts of a decoded metadata value we look at.
enum Node {
    Uint(u128),
    Str,
    Map(Vec<(String, Node)>),
    Other,
}

fn get(buf: &[u8], pos: usize, len: usize) -> Result<&[u8], String> {
    pos.checked_add(len)
        .and_then(|end| buf.get(pos..end))
        .ok_or_else(|| format!("value at {pos} runs past the end of the buffer"))
}

fn be_usize(b: &[u8]) -> usize {
    b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
}

/// Checks the value at `pos` the way the `maxminddb` decoder will read it (control byte,
/// extended type, size bytes, pointers), with bounds, and returns the position after it.
/// With `build`, also returns the value (metadata only).
fn walk(buf: &[u8], pos: usize, depth: u32, budget: &mut u32, build: bool) -> Result<(Option<Node>, usize), String> {
    if depth > MAX_DEPTH {
        return Err("values nested too deeply (pointer loop?)".into());
    }
    *budget = budget.checked_sub(1).ok_or("too many values (pointer loop?)")?;
    let ctrl = get(buf, pos, 1)?[0];
    let mut p = pos + 1;
    let mut type_num = ctrl >> 5;
    if type_num == 0 {
        let ext = get(buf, p, 1)?[0];
        p += 1;
        if ext == 0 || ext > 8 {
            return Err(format!("bad extended type {ext} at {pos}"));
        }
        type_num = ext + 7;
    }
    let mut size = usize::from(ctrl & 0x1f);
    if type_num == 1 {
        // Pointer: 001SSVVV. The reader would treat sizes 29..31 as size extensions,
        // which no writer produces; refuse them.
        if size >= 29 {
            return Err(format!("malformed pointer at {pos}"));
        }
        let len = ((size >> 3) & 0x3) + 1;
        let raw = get(buf, p, len)?;
        let base = if len == 4 { 0 } else { size & 0x7 };
        let target = ((base << (8 * len)) | be_usize(raw)) + [0, 0, 2048, 526_336, 0][len];
        let next = p + len;
        if get(buf, target, 1)?[0] >> 5 == 1 {
            return Err(format!("pointer at {pos} points to a pointer"));
        }
        let (v, _) = walk(buf, target, depth + 1, budget, build)?;
        return Ok((v, next));
    }
    match size {
        29 => {
            size = 29 + usize::from(get(buf, p, 1)?[0]);
            p += 1;
        }
        30 => {
            size = 285 + be_usize(get(buf, p, 2)?);
            p += 2;
        }
        31 => {
            size = 65_821 + be_usize(get(buf, p, 3)?);
            p += 3;
        }
        _ => {}
    }
    let fixed = |max: usize, exact: bool| -> Result<usize, String> {
        if size > max || (exact && size != max) {
            return Err(format!("type {type_num} of size {size} at {pos}"));
        }
        get(buf, p, size)?;
        Ok(p + size)
    };
    match type_num {
        2 => {
            // UTF-8 validity is checked by the reader (an error, not a panic).
            get(buf, p, size)?;
            Ok((build.then_some(Node::Str), p + size))
        }
        4 => {
            get(buf, p, size)?;
            Ok((build.then_some(Node::Other), p + size))
        }
        3 => Ok((build.then_some(Node::Other), fixed(8, true)?)),
        15 => Ok((build.then_some(Node::Other), fixed(4, true)?)),
        5 | 6 | 8 | 9 | 10 => {
            let max = match type_num {
                5 => 2,
                6 | 8 => 4,
                9 => 8,
                _ => 16,
            };
            let next = fixed(max, false)?;
            let v = build.then(|| {
                if type_num == 8 {
                    Node::Other
                } else {
                    Node::Uint(buf[p..next].iter().fold(0u128, |acc, &x| (acc << 8) | u128::from(x)))
                }
            });
            Ok((v, next))
        }
        14 => {
            if size > 1 {
                return Err(format!("boolean of size {size} at {pos}"));
            }
            Ok((build.then_some(Node::Other), p))
        }
        7 => {
            let mut entries = Vec::new();
            for _ in 0..size {
                let key_pos = p;
                p = walk(buf, p, depth + 1, budget, false)?.1;
                let (v, next) = walk(buf, p, depth + 1, budget, build)?;
                p = next;
                if build {
                    entries.push((string_at(buf, key_pos).unwrap_or_default(), v.unwrap_or(Node::Other)));
                }
            }
            Ok((build.then_some(Node::Map(entries)), p))
        }
        11 => {
            for _ in 0..size {
                p = walk(buf, p, depth + 1, budget, false)?.1;
            }
            Ok((build.then_some(Node::Other), p))
        }
        t => Err(format!("unsupported data type {t} at {pos}")),
    }
}

/// The UTF-8 string at `pos` (following one pointer), for metadata keys; `None` if the
/// value there is not a string. Only called on values `walk` has checked.
fn string_at(buf: &[u8], pos: usize) -> Option<String> {
    let ctrl = *buf.get(pos)?;
    match ctrl >> 5 {
        1 => {
            let size = usize::from(ctrl & 0x1f);
            let len = ((size >> 3) & 0x3) + 1;
            let raw = buf.get(pos + 1..pos + 1 + len)?;
            let base = if len == 4 { 0 } else { size & 0x7 };
            string_at(buf, ((base << (8 * len)) | be_usize(raw)) + [0, 0, 2048, 526_336, 0][len])
        }
        2 => {
            let (size, p) = match ctrl & 0x1f {
                29 => (29 + usize::from(*buf.get(pos + 1)?), pos + 2),
                30 => (285 + be_usize(buf.get(pos + 1..pos + 3)?), pos + 3),
                31 => (65_821 + be_usize(buf.get(pos + 1..pos + 4)?), pos + 4),
                s => (usize::from(s), pos + 1),
            };
            std::str::from_utf8(buf.get(p..p + size)?).ok().map(str::to_owned)
        }
        _ => None,
    }
}
