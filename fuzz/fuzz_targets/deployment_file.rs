//! A deployment file: any text must give a deployment or a list of problems, each
//! naming the file, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use modhost::deployment::Deployment;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(problems) = Deployment::parse(Path::new("/nonexistent/fuzz.toml"), &text) {
        assert!(!problems.0.is_empty());
        assert!(problems.to_string().contains("fuzz.toml"), "{problems}");
    }
});
