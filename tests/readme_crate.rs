//! The README's example compiles in a new crate that depends on sockloop
//! alone, as a user pastes it: no `bytes` (or any other) dependency of its
//! own. The doctest of the README cannot show that (doctests see every
//! dependency of sockloop).
//!
//! `cargo check --offline` of a scratch crate with a path dependency on this
//! checkout and this checkout's Cargo.lock (so the registry cache already has
//! every crate). Its target directory lives under ours and is kept between
//! runs: after the first, only sockloop and the example are checked again.

use std::path::Path;
use std::process::Command;

/// The first `rust` code block of the README, as a user copies it (rustdoc's
/// hidden `# ` lines included).
fn readme_example(readme: &str) -> String {
    let mut lines = readme.lines().skip_while(|l| !l.starts_with("```rust"));
    lines.next().expect("the README has a rust code block");
    let mut code = String::new();
    for line in lines.take_while(|l| !l.starts_with("```")) {
        let line = line.strip_prefix("# ").unwrap_or(line);
        code.push_str(line);
        code.push('\n');
    }
    code
}

#[test]
fn the_readme_example_compiles_in_a_crate_of_its_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let code = readme_example(&readme);
    assert!(
        code.contains("fn main"),
        "the example is a program:\n{code}"
    );

    let scratch = root.join("target").join("readme-crate");
    std::fs::create_dir_all(scratch.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"readme-example\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\nsockloop = {{ path = {:?} }}\n\n[workspace]\n",
        root.display().to_string()
    );
    std::fs::write(scratch.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(scratch.join("src").join("main.rs"), &code).unwrap();
    // Our lock file: the same versions, all in the registry cache.
    std::fs::copy(root.join("Cargo.lock"), scratch.join("Cargo.lock")).unwrap();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["check", "--offline", "--quiet", "--manifest-path"])
        .arg(scratch.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", scratch.join("target"))
        // The outer `cargo test`'s flags are not the scratch crate's business.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "the README example does not compile on its own:\n{}\n--- the example ---\n{code}",
        String::from_utf8_lossy(&out.stderr)
    );
}
