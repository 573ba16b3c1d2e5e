//! A call frame as a peer node sends it: the header, then the parameters of a function
//! of the testing contract (`wit/testing/kinds.wit`, every kind of WIT value). Decoding
//! any bytes must end in a value or an error, never a panic, a hang or a huge
//! allocation; what decodes must encode back to bytes that decode to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use modhost::mesh::wire::{decode_values, encode_values, CallHeader};
use std::sync::OnceLock;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Type};

/// The parameter types of every function the callee test module exports.
fn signatures() -> &'static Vec<Vec<Type>> {
    static SIGNATURES: OnceLock<Vec<Vec<Type>>> = OnceLock::new();
    SIGNATURES.get_or_init(|| {
        let engine = wasmtime::Engine::default();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/wasm32-wasip2/guest/callee.wasm"
        );
        let component =
            Component::from_file(&engine, path).expect("build the guests first: fuzz/run.sh does");
        let mut signatures = Vec::new();
        for (_, item) in component.component_type().exports(&engine) {
            let ComponentItem::ComponentInstance(instance) = item.ty else {
                continue;
            };
            for (_, item) in instance.exports(&engine) {
                if let ComponentItem::ComponentFunc(function) = item.ty {
                    signatures.push(function.params().map(|(_, ty)| ty).collect());
                    signatures.push(function.results().collect());
                }
            }
        }
        assert!(!signatures.is_empty(), "the callee exports no functions");
        signatures
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let mut input = frame;
    if let Ok(header) = CallHeader::decode(&mut input) {
        let mut again = Vec::new();
        header.encode(&mut again);
        assert_eq!(CallHeader::decode(&mut &again[..]).unwrap(), header);
    }
    let signatures = signatures();
    let types = &signatures[usize::from(pick) % signatures.len()];
    let mut input = frame;
    if let Ok(values) = decode_values(&mut input, types) {
        let mut encoded = Vec::new();
        encode_values(&values, types, &mut encoded).expect("a decoded value encodes");
        let decoded = decode_values(&mut &encoded[..], types).expect("an encoded value decodes");
        assert_eq!(format!("{decoded:?}"), format!("{values:?}"));
    }
});
