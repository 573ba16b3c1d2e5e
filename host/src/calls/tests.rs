use super::contract::*;
use crate::module::interface::InterfaceName;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The contract of interface `name` as imported by the component `wat`.
fn imported(engine: &Engine, wat: &str, name: &str) -> Result<Interface, String> {
    let component = Component::new(engine, wat).expect("valid component");
    let ty = component.component_type();
    let item = ty.get_import(engine, name).expect("import present");
    let ComponentItem::ComponentInstance(instance) = &item.ty else {
        panic!("{name} is not an instance");
    };
    Interface::of(engine, InterfaceName::parse(name).unwrap(), instance)
}

/// A component importing `shop:inventory/api@VERSION` with `body` as its instance type.
fn inventory(version: &str, body: &str) -> String {
    format!(
        r#"(component
            (import "shop:inventory/api@{version}" (instance $api {body}))
        )"#
    )
}

const EVERY_KIND: &str = r#"
    (type $item (record (field "sku" string) (field "quantity" u32)))
    (export "item" (type $item-t (eq $item)))
    (type $reason (variant (case "out-of-stock" u32) (case "unknown-sku")))
    (export "reason" (type $reason-t (eq $reason)))
    (type $color (enum "red" "green"))
    (export "color" (type $color-t (eq $color)))
    (type $perms (flags "read" "write"))
    (export "perms" (type $perms-t (eq $perms)))
    (export "reserve" (func
        (param "items" (list $item-t))
        (param "note" (option string))
        (param "pair" (tuple bool char))
        (param "color" $color-t)
        (param "perms" $perms-t)
        (param "numbers" (tuple s8 u8 s16 u16 s32 u32 s64 u64 f32 f64))
        (result (result u64 (error $reason-t)))))
    (export "ping" (func))
"#;

#[test]
fn every_value_type_kind_becomes_a_comparable_shape() {
    let engine = Engine::default();
    let api = imported(
        &engine,
        &inventory("1.0.0", EVERY_KIND),
        "shop:inventory/api@1.0.0",
    )
    .unwrap();
    assert_eq!(api.name.package, "shop:inventory");
    assert_eq!(api.name.interface, "api");
    assert_eq!(api.functions.len(), 2);
    let reserve = api.functions["reserve"].to_string();
    assert_eq!(
        reserve,
        "func(items: list<record { sku: string, quantity: u32 }>, note: option<string>, \
         pair: tuple<bool, char>, color: enum { red, green }, perms: flags { read, write }, \
         numbers: tuple<s8, u8, s16, u16, s32, u32, s64, u64, f32, f64>) \
         -> result<u64, variant { out-of-stock(u32), unknown-sku }>"
    );
    assert_eq!(api.functions["ping"].to_string(), "func()");

    // The same contract declared by another component compares equal.
    let again = imported(
        &engine,
        &inventory("1.2.0", EVERY_KIND),
        "shop:inventory/api@1.2.0",
    )
    .unwrap();
    assert!(mismatches(&api, &again).is_empty());
}

#[test]
fn a_changed_signature_is_reported_with_both_sides() {
    let engine = Engine::default();
    let expected = imported(
        &engine,
        &inventory("1.0.0", r#"(export "reserve" (func (param "sku" string) (param "quantity" u32) (result bool)))"#),
        "shop:inventory/api@1.0.0",
    )
    .unwrap();
    let found = imported(
        &engine,
        &inventory("1.0.0", r#"(export "reserve" (func (param "sku" string) (param "quantity" u64) (result bool)))"#),
        "shop:inventory/api@1.0.0",
    )
    .unwrap();
    let problems = mismatches(&expected, &found);
    assert_eq!(problems.len(), 1);
    let Mismatch::Signature {
        function,
        expected,
        found,
    } = &problems[0]
    else {
        panic!("{problems:?}");
    };
    assert_eq!(function, "reserve");
    assert_eq!(
        expected.to_string(),
        "func(sku: string, quantity: u32) -> bool"
    );
    assert_eq!(
        found.to_string(),
        "func(sku: string, quantity: u64) -> bool"
    );
}

#[test]
fn a_missing_function_is_reported_and_extra_ones_are_fine() {
    let engine = Engine::default();
    let importer = imported(
        &engine,
        &inventory("1.0.0", r#"(export "reserve" (func (param "sku" string))) (export "release" (func (param "sku" string)))"#),
        "shop:inventory/api@1.0.0",
    )
    .unwrap();
    let exporter = imported(
        &engine,
        &inventory(
            "1.0.0",
            r#"(export "reserve" (func (param "sku" string))) (export "audit" (func))"#,
        ),
        "shop:inventory/api@1.0.0",
    )
    .unwrap();
    assert_eq!(
        mismatches(&importer, &exporter),
        vec![Mismatch::Missing {
            function: "release".into(),
            expected: importer.functions["release"].clone()
        }]
    );
}

#[test]
fn renamed_record_fields_and_reordered_cases_are_different_contracts() {
    let engine = Engine::default();
    let record = |field: &str| {
        inventory(
            "1.0.0",
            &format!(
                r#"(type $r (record (field "{field}" string))) (export "r" (type $rt (eq $r)))
                   (export "get" (func (result $rt)))"#
            ),
        )
    };
    let a = imported(&engine, &record("sku"), "shop:inventory/api@1.0.0").unwrap();
    let b = imported(&engine, &record("code"), "shop:inventory/api@1.0.0").unwrap();
    assert_eq!(mismatches(&a, &b).len(), 1);

    let enumeration = |cases: &str| {
        inventory(
            "1.0.0",
            &format!(
                r#"(type $e (enum {cases})) (export "e" (type $et (eq $e))) (export "get" (func (result $et)))"#
            ),
        )
    };
    let a = imported(
        &engine,
        &enumeration(r#""a" "b""#),
        "shop:inventory/api@1.0.0",
    )
    .unwrap();
    let b = imported(
        &engine,
        &enumeration(r#""b" "a""#),
        "shop:inventory/api@1.0.0",
    )
    .unwrap();
    assert_eq!(
        mismatches(&a, &b).len(),
        1,
        "enum case order is part of the ABI"
    );
}

#[test]
fn resources_may_not_cross_module_boundaries() {
    let engine = Engine::default();
    let wat = inventory(
        "1.0.0",
        r#"(export "cart" (type $cart (sub resource)))
           (export "open" (func (result (own $cart))))"#,
    );
    let error = imported(&engine, &wat, "shop:inventory/api@1.0.0").unwrap_err();
    assert!(error.contains("resource"), "{error}");
    assert!(error.contains("shop:inventory/api@1.0.0"), "{error}");
}

#[test]
fn interface_names_parse_and_versions_follow_semver() {
    let name = InterfaceName::parse("shop:inventory/api@1.2.3").unwrap();
    assert_eq!(name.package, "shop:inventory");
    assert_eq!(name.interface, "api");
    assert_eq!(name.to_string(), "shop:inventory/api@1.2.3");
    assert!(InterfaceName::parse("handle").is_none());
    assert!(InterfaceName::parse("shop:inventory/api@one").is_none());

    let v = |text: &str| InterfaceName::parse(&format!("shop:inventory/api@{text}")).unwrap();
    assert!(
        v("1.4.0").serves(&v("1.2.0")),
        "a newer minor serves an older importer"
    );
    assert!(!v("1.1.0").serves(&v("1.2.0")), "an older minor does not");
    assert!(
        !v("2.0.0").serves(&v("1.2.0")),
        "a new major is a new contract"
    );
    assert!(v("0.3.5").serves(&v("0.3.1")));
    assert!(
        !v("0.4.0").serves(&v("0.3.1")),
        "for 0.x the minor is the major"
    );
    let other = InterfaceName::parse("shop:payments/api@1.2.0").unwrap();
    assert!(!v("1.2.0").serves(&other));
}
