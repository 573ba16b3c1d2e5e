//! The mesh wire format: a call between modules on different nodes, as bytes.
//!
//! Component values are encoded **by their WIT types**, which both nodes know: the
//! importer's and exporter's signatures were checked identical when the deployment
//! loaded. So the bytes carry no type tags or field names — only values, in type order —
//! and the receiver decodes them with the same types. `docs/mesh.md` specifies the
//! format; this file is its implementation:
//!
//! | type | encoding |
//! | --- | --- |
//! | `bool`, `s8`, `u8` | one byte |
//! | `u16`, `u32`, `u64`, `char` | unsigned LEB128 |
//! | `s16`, `s32`, `s64` | zigzag, then unsigned LEB128 |
//! | `f32`, `f64` | 4 / 8 bytes, little-endian (IEEE 754, NaN payloads kept) |
//! | `string` | LEB128 byte length, then UTF-8 |
//! | `list<T>` | LEB128 count, then each element |
//! | `record`, `tuple` | each field / element in declaration order |
//! | `variant` | LEB128 case index, then the case's payload if it has one |
//! | `enum` | LEB128 case index |
//! | `option<T>` | `0`, or `1` then the value |
//! | `result<T, E>` | `0` then T's value (if T), or `1` then E's value (if E) |
//! | `flags` | ⌈n/8⌉ bytes, flag i in bit i%8 of byte i/8 |
//!
//! Resources, futures and streams cannot cross (contracts with them are refused at load).

use anyhow::{anyhow, bail, Result};
use wasmtime::component::{Type, Val};

/// Version of the call frame this node writes. Version 2 added the request id.
pub const VERSION: u8 = 2;
/// The oldest version this node still reads (a node not yet upgraded sends it); a
/// node refuses frames of any other.
pub const OLDEST_VERSION: u8 = 1;

/// Appends `values` (of `types`, in order) to `out`.
pub fn encode_values(values: &[Val], types: &[Type], out: &mut Vec<u8>) -> Result<()> {
    if values.len() != types.len() {
        bail!("{} values for {} types", values.len(), types.len());
    }
    for (value, ty) in values.iter().zip(types) {
        encode(value, ty, out)?;
    }
    Ok(())
}

/// Reads one value of each of `types` from `input`.
pub fn decode_values(input: &mut &[u8], types: &[Type]) -> Result<Vec<Val>> {
    types.iter().map(|ty| decode(input, ty)).collect()
}

fn encode(value: &Val, ty: &Type, out: &mut Vec<u8>) -> Result<()> {
    match (value, ty) {
        (Val::Bool(v), Type::Bool) => out.push(u8::from(*v)),
        (Val::S8(v), Type::S8) => out.push(*v as u8),
        (Val::U8(v), Type::U8) => out.push(*v),
        (Val::S16(v), Type::S16) => put_signed(out, i64::from(*v)),
        (Val::U16(v), Type::U16) => put_unsigned(out, u64::from(*v)),
        (Val::S32(v), Type::S32) => put_signed(out, i64::from(*v)),
        (Val::U32(v), Type::U32) => put_unsigned(out, u64::from(*v)),
        (Val::S64(v), Type::S64) => put_signed(out, *v),
        (Val::U64(v), Type::U64) => put_unsigned(out, *v),
        (Val::Float32(v), Type::Float32) => out.extend_from_slice(&v.to_bits().to_le_bytes()),
        (Val::Float64(v), Type::Float64) => out.extend_from_slice(&v.to_bits().to_le_bytes()),
        (Val::Char(v), Type::Char) => put_unsigned(out, u64::from(*v)),
        (Val::String(v), Type::String) => put_bytes(out, v.as_bytes()),
        (Val::List(items), Type::List(list)) => {
            put_unsigned(out, items.len() as u64);
            let element = list.ty();
            for item in items {
                encode(item, &element, out)?;
            }
        }
        (Val::Record(fields), Type::Record(record)) => {
            if fields.len() != record.fields().len() {
                bail!(
                    "a record with {} fields for a type of {}",
                    fields.len(),
                    record.fields().len()
                );
            }
            for ((_, value), field) in fields.iter().zip(record.fields()) {
                encode(value, &field.ty, out)?;
            }
        }
        (Val::Tuple(items), Type::Tuple(tuple)) => {
            if items.len() != tuple.types().len() {
                bail!(
                    "a tuple of {} for a type of {}",
                    items.len(),
                    tuple.types().len()
                );
            }
            for (item, ty) in items.iter().zip(tuple.types()) {
                encode(item, &ty, out)?;
            }
        }
        (Val::Variant(name, payload), Type::Variant(variant)) => {
            let (index, case) = variant
                .cases()
                .enumerate()
                .find(|(_, case)| case.name == name)
                .ok_or_else(|| anyhow!("variant has no case {name}"))?;
            put_unsigned(out, index as u64);
            match (payload, case.ty) {
                (Some(value), Some(ty)) => encode(value, &ty, out)?,
                (None, None) => {}
                _ => bail!("variant case {name}: payload does not match its type"),
            }
        }
        (Val::Enum(name), Type::Enum(cases)) => {
            let index = cases
                .names()
                .position(|case| case == name)
                .ok_or_else(|| anyhow!("enum has no case {name}"))?;
            put_unsigned(out, index as u64);
        }
        (Val::Option(value), Type::Option(option)) => match value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                encode(value, &option.ty(), out)?;
            }
        },
        (Val::Result(value), Type::Result(result)) => {
            let (tag, payload, ty) = match value {
                Ok(payload) => (0, payload, result.ok()),
                Err(payload) => (1, payload, result.err()),
            };
            out.push(tag);
            match (payload, ty) {
                (Some(value), Some(ty)) => encode(value, &ty, out)?,
                (None, None) => {}
                _ => bail!("result payload does not match its type"),
            }
        }
        (Val::Flags(set), Type::Flags(flags)) => {
            let names: Vec<&str> = flags.names().collect();
            let mut bits = vec![0u8; names.len().div_ceil(8)];
            for name in set {
                let index = names
                    .iter()
                    .position(|flag| flag == name)
                    .ok_or_else(|| anyhow!("flags have no flag {name}"))?;
                bits[index / 8] |= 1 << (index % 8);
            }
            out.extend_from_slice(&bits);
        }
        (value, ty) => bail!("cannot send {value:?} as {ty:?} between nodes"),
    }
    Ok(())
}

fn decode(input: &mut &[u8], ty: &Type) -> Result<Val> {
    Ok(match ty {
        Type::Bool => Val::Bool(match take(input, 1)?[0] {
            0 => false,
            1 => true,
            other => bail!("bool byte {other}"),
        }),
        Type::S8 => Val::S8(take(input, 1)?[0] as i8),
        Type::U8 => Val::U8(take(input, 1)?[0]),
        Type::S16 => Val::S16(i16::try_from(get_signed(input)?)?),
        Type::U16 => Val::U16(u16::try_from(get_unsigned(input)?)?),
        Type::S32 => Val::S32(i32::try_from(get_signed(input)?)?),
        Type::U32 => Val::U32(u32::try_from(get_unsigned(input)?)?),
        Type::S64 => Val::S64(get_signed(input)?),
        Type::U64 => Val::U64(get_unsigned(input)?),
        Type::Float32 => Val::Float32(f32::from_bits(u32::from_le_bytes(
            take(input, 4)?.try_into()?,
        ))),
        Type::Float64 => Val::Float64(f64::from_bits(u64::from_le_bytes(
            take(input, 8)?.try_into()?,
        ))),
        Type::Char => Val::Char(
            char::from_u32(u32::try_from(get_unsigned(input)?)?)
                .ok_or_else(|| anyhow!("not a char"))?,
        ),
        Type::String => Val::String(get_string(input)?),
        Type::List(list) => {
            let count = get_count(input)?;
            let element = list.ty();
            let mut items = Vec::with_capacity(count.min(input.len()));
            for _ in 0..count {
                items.push(decode(input, &element)?);
            }
            Val::List(items)
        }
        Type::Record(record) => Val::Record(
            record
                .fields()
                .map(|field| Ok((field.name.to_string(), decode(input, &field.ty)?)))
                .collect::<Result<_>>()?,
        ),
        Type::Tuple(tuple) => Val::Tuple(
            tuple
                .types()
                .map(|ty| decode(input, &ty))
                .collect::<Result<_>>()?,
        ),
        Type::Variant(variant) => {
            let index = get_count(input)?;
            let case = variant
                .cases()
                .nth(index)
                .ok_or_else(|| anyhow!("variant case {index} does not exist"))?;
            let payload = match case.ty {
                Some(ty) => Some(Box::new(decode(input, &ty)?)),
                None => None,
            };
            Val::Variant(case.name.to_string(), payload)
        }
        Type::Enum(cases) => {
            let index = get_count(input)?;
            Val::Enum(
                cases
                    .names()
                    .nth(index)
                    .ok_or_else(|| anyhow!("enum case {index} does not exist"))?
                    .to_string(),
            )
        }
        Type::Option(option) => Val::Option(match take(input, 1)?[0] {
            0 => None,
            1 => Some(Box::new(decode(input, &option.ty())?)),
            other => bail!("option tag {other}"),
        }),
        Type::Result(result) => {
            let tag = take(input, 1)?[0];
            let ty = match tag {
                0 => result.ok(),
                1 => result.err(),
                other => bail!("result tag {other}"),
            };
            let payload = match ty {
                Some(ty) => Some(Box::new(decode(input, &ty)?)),
                None => None,
            };
            Val::Result(if tag == 0 { Ok(payload) } else { Err(payload) })
        }
        Type::Flags(flags) => {
            let names: Vec<&str> = flags.names().collect();
            let bits = take(input, names.len().div_ceil(8))?;
            Val::Flags(
                names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits[i / 8] & (1 << (i % 8)) != 0)
                    .map(|(_, name)| name.to_string())
                    .collect(),
            )
        }
        other => bail!("cannot receive a {other:?} between nodes"),
    })
}

/// Appends `value` as unsigned LEB128.
pub fn put_unsigned(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// Appends `bytes` with their length first.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_unsigned(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads an unsigned LEB128 value.
pub fn get_unsigned(input: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take(input, 1)?[0];
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            bail!("LEB128 value overflows 64 bits");
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("LEB128 value longer than 10 bytes")
}

fn get_signed(input: &mut &[u8]) -> Result<i64> {
    let raw = get_unsigned(input)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

/// Reads a count (of elements, or a case index) that must fit in memory.
fn get_count(input: &mut &[u8]) -> Result<usize> {
    Ok(usize::try_from(get_unsigned(input)?)?)
}

/// Reads bytes written by [`put_bytes`].
pub fn get_bytes<'a>(input: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = get_count(input)?;
    take(input, len)
}

/// Reads a string written by [`put_bytes`].
pub fn get_string(input: &mut &[u8]) -> Result<String> {
    Ok(std::str::from_utf8(get_bytes(input)?)?.to_string())
}

/// Takes the next `len` bytes.
pub fn take<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8]> {
    if input.len() < len {
        bail!(
            "the frame ends early ({} bytes left, {len} wanted)",
            input.len()
        );
    }
    let (head, rest) = input.split_at(len);
    *input = rest;
    Ok(head)
}

/// One call to a module on another node, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallHeader {
    /// The interface, with its version: `shop:inventory/api@1.1.0`.
    pub interface: String,
    /// The function within it.
    pub function: String,
    /// The calling module.
    pub caller: String,
    /// How many calls deep the callee runs.
    pub depth: u32,
    /// Milliseconds the caller will still wait: the callee gets no more.
    pub deadline_ms: u64,
    /// The caller's trace context (`traceparent`), or empty.
    pub traceparent: String,
    /// The id of the request the call serves (`x-request-id`), or empty. Since
    /// version 2 of the frame.
    pub request_id: String,
}

impl CallHeader {
    /// Writes the frame's version and this header.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        put_bytes(out, self.interface.as_bytes());
        put_bytes(out, self.function.as_bytes());
        put_bytes(out, self.caller.as_bytes());
        put_unsigned(out, u64::from(self.depth));
        put_unsigned(out, self.deadline_ms);
        put_bytes(out, self.traceparent.as_bytes());
        put_bytes(out, self.request_id.as_bytes());
    }

    /// Reads a frame's version and header; `input` is left at the parameters.
    pub fn decode(input: &mut &[u8]) -> Result<CallHeader> {
        let version = take(input, 1)?[0];
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            bail!(
                "call frame version {version}; this node speaks versions {OLDEST_VERSION} to {VERSION}"
            );
        }
        Ok(CallHeader {
            interface: get_string(input)?,
            function: get_string(input)?,
            caller: get_string(input)?,
            depth: u32::try_from(get_unsigned(input)?)?,
            deadline_ms: get_unsigned(input)?,
            traceparent: get_string(input)?,
            // Version 1 frames carry no request id.
            request_id: if version >= 2 {
                get_string(input)?
            } else {
                String::new()
            },
        })
    }
}

/// How a remote call ended, as the callee's node answers: `0` then the results, or `1`,
/// the failure kind, and the message.
pub mod outcome {
    /// The call returned; its results follow.
    pub const OK: u8 = 0;
    /// The call failed; a kind byte and a message follow.
    pub const FAILED: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_at_their_edges() {
        for value in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_signed(&mut out, value);
            assert_eq!(get_signed(&mut &out[..]).unwrap(), value);
        }
        for value in [0u64, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut out = Vec::new();
            put_unsigned(&mut out, value);
            assert_eq!(get_unsigned(&mut &out[..]).unwrap(), value);
        }
        let mut small = Vec::new();
        put_unsigned(&mut small, 5);
        assert_eq!(small, [5], "small numbers take one byte");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        // Eleven continuation bytes, a truncated string, an overlong one.
        assert!(get_unsigned(&mut &[0x80u8; 11][..]).is_err());
        assert!(get_unsigned(
            &mut &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f][..]
        )
        .is_err());
        assert!(get_string(&mut &[5, b'a', b'b'][..]).is_err());
        assert!(get_string(&mut &[2, 0xff, 0xfe][..]).is_err());
        assert!(CallHeader::decode(&mut &[9u8][..]).is_err());
        assert!(decode(&mut &[7u8][..], &Type::Bool).is_err());
    }

    #[test]
    fn a_header_round_trips() {
        let header = CallHeader {
            interface: "shop:inventory/api@1.1.0".into(),
            function: "reserve".into(),
            caller: "orders".into(),
            depth: 2,
            deadline_ms: 1_999,
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            request_id: "req-42".into(),
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        out.extend_from_slice(b"params");
        let mut input = &out[..];
        assert_eq!(CallHeader::decode(&mut input).unwrap(), header);
        assert_eq!(input, b"params");
    }

    #[test]
    fn a_version_1_header_is_read_without_a_request_id() {
        // What a node not yet upgraded sends: no request id after the trace context.
        let mut out = vec![1];
        for text in ["shop:inventory/api@1.1.0", "reserve", "orders"] {
            put_bytes(&mut out, text.as_bytes());
        }
        put_unsigned(&mut out, 2);
        put_unsigned(&mut out, 1_999);
        put_bytes(&mut out, b"");
        out.extend_from_slice(b"params");
        let mut input = &out[..];
        let header = CallHeader::decode(&mut input).unwrap();
        assert_eq!(
            (header.caller.as_str(), header.request_id.as_str()),
            ("orders", "")
        );
        assert_eq!(input, b"params");
        // A version newer than this node's is refused, naming both.
        let error = CallHeader::decode(&mut &[VERSION + 1][..]).unwrap_err();
        assert!(
            error.to_string().contains("speaks versions 1 to 2"),
            "{error}"
        );
    }

    #[test]
    fn scalars_and_strings_round_trip_by_type() {
        let pairs = [
            (Val::Bool(true), Type::Bool),
            (Val::S8(-5), Type::S8),
            (Val::U16(65_535), Type::U16),
            (Val::S32(i32::MIN), Type::S32),
            (Val::U64(u64::MAX), Type::U64),
            (Val::Float32(f32::NAN), Type::Float32),
            (Val::Float64(-0.0), Type::Float64),
            (Val::Char('é'), Type::Char),
            (Val::String("ünïcode ✓".into()), Type::String),
        ];
        let (values, types): (Vec<Val>, Vec<Type>) = pairs.into_iter().unzip();
        let mut out = Vec::new();
        encode_values(&values, &types, &mut out).unwrap();
        let mut input = &out[..];
        let back = decode_values(&mut input, &types).unwrap();
        assert!(input.is_empty());
        for (sent, got) in values.iter().zip(&back) {
            match (sent, got) {
                (Val::Float32(a), Val::Float32(b)) => assert_eq!(a.to_bits(), b.to_bits()),
                (Val::Float64(a), Val::Float64(b)) => assert_eq!(a.to_bits(), b.to_bits()),
                _ => assert_eq!(sent, got),
            }
        }
        // A value of the wrong type is refused, not sent.
        assert!(encode_values(&[Val::U8(1)], &[Type::String], &mut Vec::new()).is_err());
    }
}
