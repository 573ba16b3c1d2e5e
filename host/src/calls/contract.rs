//! Contracts: what a module's WIT interfaces say, in a form the host can compare.
//!
//! Modules call each other only through WIT interfaces (`shop:inventory/api@1.0.0`).
//! When a deployment loads, every interface a module imports must be exported by
//! another deployed module with a compatible contract: same package and interface,
//! a semver-compatible version, and every imported function present with identical
//! parameter and result types. wasmtime's component types are tied to the component
//! that declares them, so two components' types cannot be compared directly; this
//! module turns them into [`Shape`]s — plain structural values that compare by
//! content and print as WIT — and checks contracts with those.
//!
//! Resources (handles) may not cross module boundaries: a handle means nothing in
//! another module's store. They, and the async types (`future`, `stream`,
//! `error-context`), are refused at load with the function that uses them.

use std::collections::BTreeMap;
use std::fmt;
use wasmtime::component::types::{ComponentFunc, ComponentInstance, ComponentItem, Type};
use wasmtime::Engine;

use crate::module::interface::InterfaceName;

/// A WIT value type, structurally: two shapes are equal when the types are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// `bool`
    Bool,
    /// `s8`
    S8,
    /// `u8`
    U8,
    /// `s16`
    S16,
    /// `u16`
    U16,
    /// `s32`
    S32,
    /// `u32`
    U32,
    /// `s64`
    S64,
    /// `u64`
    U64,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `char`
    Char,
    /// `string`
    String,
    /// `list<T>`
    List(Box<Shape>),
    /// `record { name: T, … }`, fields in declaration order.
    Record(Vec<(String, Shape)>),
    /// `tuple<T, …>`
    Tuple(Vec<Shape>),
    /// `variant { case(T), case, … }`
    Variant(Vec<(String, Option<Shape>)>),
    /// `enum { a, b, … }`
    Enum(Vec<String>),
    /// `option<T>`
    Option(Box<Shape>),
    /// `result<T, E>`, either side optional.
    Result(Option<Box<Shape>>, Option<Box<Shape>>),
    /// `flags { a, b, … }`
    Flags(Vec<String>),
}

/// A type that may not appear in a contract between modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl Shape {
    /// The shape of `ty`, or why it cannot cross a module boundary.
    pub fn of(ty: &Type) -> Result<Shape, Unsupported> {
        Ok(match ty {
            Type::Bool => Shape::Bool,
            Type::S8 => Shape::S8,
            Type::U8 => Shape::U8,
            Type::S16 => Shape::S16,
            Type::U16 => Shape::U16,
            Type::S32 => Shape::S32,
            Type::U32 => Shape::U32,
            Type::S64 => Shape::S64,
            Type::U64 => Shape::U64,
            Type::Float32 => Shape::F32,
            Type::Float64 => Shape::F64,
            Type::Char => Shape::Char,
            Type::String => Shape::String,
            Type::List(list) => Shape::List(Box::new(Shape::of(&list.ty())?)),
            Type::Record(record) => Shape::Record(
                record
                    .fields()
                    .map(|field| Ok((field.name.to_string(), Shape::of(&field.ty)?)))
                    .collect::<Result<_, _>>()?,
            ),
            Type::Tuple(tuple) => Shape::Tuple(
                tuple
                    .types()
                    .map(|ty| Shape::of(&ty))
                    .collect::<Result<_, _>>()?,
            ),
            Type::Variant(variant) => Shape::Variant(
                variant
                    .cases()
                    .map(|case| {
                        let payload = case.ty.as_ref().map(Shape::of).transpose()?;
                        Ok((case.name.to_string(), payload))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Type::Enum(enumeration) => {
                Shape::Enum(enumeration.names().map(str::to_string).collect())
            }
            Type::Option(option) => Shape::Option(Box::new(Shape::of(&option.ty())?)),
            Type::Result(result) => Shape::Result(
                result
                    .ok()
                    .as_ref()
                    .map(Shape::of)
                    .transpose()?
                    .map(Box::new),
                result
                    .err()
                    .as_ref()
                    .map(Shape::of)
                    .transpose()?
                    .map(Box::new),
            ),
            Type::Flags(flags) => Shape::Flags(flags.names().map(str::to_string).collect()),
            Type::Own(_) | Type::Borrow(_) => {
                return Err(Unsupported(
                    "a resource handle (resources may not cross module boundaries: \
                     a handle means nothing in another module's store)"
                        .into(),
                ))
            }
            Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
                return Err(Unsupported(
                    "an async type (future, stream, error-context); calls between modules \
                     pass plain values"
                        .into(),
                ))
            }
            Type::Map(_) | Type::FixedLengthList(_) => {
                return Err(Unsupported(
                    "a map or fixed-length list, which this host does not pass between modules yet"
                        .into(),
                ))
            }
        })
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T>(
            f: &mut fmt::Formatter<'_>,
            items: &[T],
            each: impl Fn(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
        ) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                each(f, item)?;
            }
            Ok(())
        }
        match self {
            Shape::Bool => write!(f, "bool"),
            Shape::S8 => write!(f, "s8"),
            Shape::U8 => write!(f, "u8"),
            Shape::S16 => write!(f, "s16"),
            Shape::U16 => write!(f, "u16"),
            Shape::S32 => write!(f, "s32"),
            Shape::U32 => write!(f, "u32"),
            Shape::S64 => write!(f, "s64"),
            Shape::U64 => write!(f, "u64"),
            Shape::F32 => write!(f, "f32"),
            Shape::F64 => write!(f, "f64"),
            Shape::Char => write!(f, "char"),
            Shape::String => write!(f, "string"),
            Shape::List(item) => write!(f, "list<{item}>"),
            Shape::Record(fields) => {
                write!(f, "record {{ ")?;
                list(f, fields, |f, (name, ty)| write!(f, "{name}: {ty}"))?;
                write!(f, " }}")
            }
            Shape::Tuple(items) => {
                write!(f, "tuple<")?;
                list(f, items, |f, ty| write!(f, "{ty}"))?;
                write!(f, ">")
            }
            Shape::Variant(cases) => {
                write!(f, "variant {{ ")?;
                list(f, cases, |f, (name, payload)| match payload {
                    Some(ty) => write!(f, "{name}({ty})"),
                    None => write!(f, "{name}"),
                })?;
                write!(f, " }}")
            }
            Shape::Enum(names) => {
                write!(f, "enum {{ ")?;
                list(f, names, |f, name| write!(f, "{name}"))?;
                write!(f, " }}")
            }
            Shape::Option(ty) => write!(f, "option<{ty}>"),
            Shape::Result(ok, err) => match (ok, err) {
                (None, None) => write!(f, "result"),
                (Some(ok), None) => write!(f, "result<{ok}>"),
                (None, Some(err)) => write!(f, "result<_, {err}>"),
                (Some(ok), Some(err)) => write!(f, "result<{ok}, {err}>"),
            },
            Shape::Flags(names) => {
                write!(f, "flags {{ ")?;
                list(f, names, |f, name| write!(f, "{name}"))?;
                write!(f, " }}")
            }
        }
    }
}

/// A function's signature: parameter names and types, result type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Parameters in order.
    pub params: Vec<(String, Shape)>,
    /// The result, if any.
    pub result: Option<Shape>,
}

impl Signature {
    /// The signature of `func`, or why a parameter or result cannot cross modules.
    pub fn of(func: &ComponentFunc) -> Result<Signature, Unsupported> {
        let params = func
            .params()
            .map(|(name, ty)| {
                Shape::of(&ty)
                    .map(|shape| (name.to_string(), shape))
                    .map_err(|Unsupported(why)| Unsupported(format!("parameter `{name}` is {why}")))
            })
            .collect::<Result<_, _>>()?;
        let mut results = func.results();
        let result = match (results.next(), results.next()) {
            (None, _) => None,
            (Some(ty), None) => Some(
                Shape::of(&ty)
                    .map_err(|Unsupported(why)| Unsupported(format!("the result is {why}")))?,
            ),
            (Some(_), Some(_)) => return Err(Unsupported("multiple results".into())),
        };
        Ok(Signature { params, result })
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "func(")?;
        for (i, (name, ty)) in self.params.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{name}: {ty}")?;
        }
        write!(f, ")")?;
        if let Some(result) = &self.result {
            write!(f, " -> {result}")?;
        }
        Ok(())
    }
}

/// One interface of a component: its functions and their signatures.
#[derive(Debug, Clone)]
pub struct Interface {
    /// Its full name.
    pub name: InterfaceName,
    /// Its functions, by name.
    pub functions: BTreeMap<String, Signature>,
}

impl Interface {
    /// The interface `name` of type `instance`, or the first function that cannot
    /// cross modules, and why.
    pub fn of(
        engine: &Engine,
        name: InterfaceName,
        instance: &ComponentInstance,
    ) -> Result<Interface, String> {
        let mut functions = BTreeMap::new();
        for (function, item) in instance.exports(engine) {
            match &item.ty {
                ComponentItem::ComponentFunc(func) => {
                    let signature = Signature::of(func).map_err(|Unsupported(why)| {
                        format!("function `{function}` of {name}: {why}")
                    })?;
                    functions.insert(function.to_string(), signature);
                }
                ComponentItem::Resource(_) => {
                    return Err(format!(
                        "{name} defines resource `{function}`; resources may not cross module boundaries"
                    ))
                }
                // Type exports (records, enums…) are described by the functions using them.
                _ => {}
            }
        }
        Ok(Interface { name, functions })
    }
}

/// One way an importer's expectations and an exporter's contract disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The exporter has no function of that name.
    Missing {
        /// The function.
        function: String,
        /// What the importer expects.
        expected: Signature,
    },
    /// The function exists with another signature.
    Signature {
        /// The function.
        function: String,
        /// What the importer expects.
        expected: Signature,
        /// What the exporter provides.
        found: Signature,
    },
}

/// The ways `exporter` fails to serve what `importer` imports (empty: compatible).
/// Functions the exporter has beyond those imported do not matter.
pub fn mismatches(importer: &Interface, exporter: &Interface) -> Vec<Mismatch> {
    importer
        .functions
        .iter()
        .filter_map(
            |(function, expected)| match exporter.functions.get(function) {
                None => Some(Mismatch::Missing {
                    function: function.clone(),
                    expected: expected.clone(),
                }),
                Some(found) if found != expected => Some(Mismatch::Signature {
                    function: function.clone(),
                    expected: expected.clone(),
                    found: found.clone(),
                }),
                Some(_) => None,
            },
        )
        .collect()
}
