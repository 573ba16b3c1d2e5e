//! The callee of the call tests: exports `modhost-testing:kinds/api` (every kind of
//! WIT value, a typed error, a trap, a spin, a call failing every other time, a slow
//! call) and `bounce`, which calls back into its
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

    fn flaky() -> u32 {
        // A coin from the host's randomness (std seeds its hasher keys from it): an
        // instance that traps is discarded, so no counter could alternate.
        use std::hash::{BuildHasher, Hasher};
        let coin = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        if coin & 1 == 1 {
            panic!("callee: flaky call fails");
        }
        1
    }

    fn nap(ms: u32) -> u32 {
        std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
        ms
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
