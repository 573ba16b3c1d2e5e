//! The callee of the call tests: exports `modhost-testing:kinds/api` (every kind of
//! WIT value, a typed error, a trap, a spin) and `bounce`, which calls back into its
//! caller for cycle and recursion tests. It serves no HTTP: only calls reach it.

wit_bindgen::generate!({
    path: "../../../wit/testing",
    world: "callee",
});

use exports::modhost_testing::kinds::api::{Everything, Guest as Api, Item, Reason};
use exports::modhost_testing::kinds::bounce::Guest as Bounce;
use modhost_testing::kinds::bounce_back::bounce_back;

struct Callee;

/// How many times `served` was called in this instance.
static SERVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Api for Callee {
    fn echo(value: Everything) -> Everything {
        value
    }

    fn reserve(item: Item) -> Result<u32, Reason> {
        if item.sku.is_empty() {
            Err(Reason::UnknownSku)
        } else if item.quantity > 10 {
            Err(Reason::OutOfStock(item.quantity))
        } else {
            Ok(item.quantity)
        }
    }

    fn crash() {
        panic!("callee: deliberate trap");
    }

    fn served() -> u32 {
        SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    fn spin() {
        let mut counter: u64 = 0;
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }
}

impl Bounce for Callee {
    fn bounce(n: u32) -> u32 {
        if n == 0 {
            0
        } else {
            bounce_back(n - 1) + 1
        }
    }
}

export!(Callee);
