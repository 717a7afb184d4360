//! Prepares docs/*.md for `sockloop::guide` (the pages readable where the
//! crate is published): links between pages become intra-doc links, which
//! rustdoc checks; plots are embedded (rustdoc copies no images); code blocks
//! without a language are marked `text`, as rustdoc would otherwise compile
//! them as Rust. The files in docs/ stay plain Markdown for readers of the
//! repository.

use std::env;
use std::fs;
use std::path::Path;

const PAGES: &[&str] = &[
    "design",
    "asyncore",
    "socketserver",
    "offload",
    "tls",
    "reliability",
    "benchmarks",
    "deploy",
    "servers",
];

fn main() {
    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo::rerun-if-changed=docs");
    for page in PAGES {
        let md = fs::read_to_string(format!("docs/{page}.md"))
            .unwrap_or_else(|e| panic!("docs/{page}.md: {e}"));
        fs::write(Path::new(&out).join(format!("{page}.md")), rewrite(&md))
            .expect("OUT_DIR is writable");
    }
}

fn rewrite(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    let mut in_code = false;
    for line in md.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            if !in_code && info.trim().is_empty() {
                out.push_str(&line.replace("```", "```text"));
                out.push('\n');
                in_code = true;
                continue;
            }
            in_code = !in_code;
        }
        if in_code {
            out.push_str(line);
        } else {
            out.push_str(&rewrite_links(&escape_brackets(line)));
        }
        out.push('\n');
    }
    out
}

/// `](page.md#anchor)` to `](crate::guide::page#anchor)`, `](img/x.svg)` to
/// a data URI; other targets stay.
fn rewrite_links(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        out.push_str(&rest[..at + 2]);
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
        let anchor = if anchor.is_empty() {
            String::new()
        } else {
            format!("#{anchor}")
        };
        match file.strip_suffix(".md") {
            Some(page) if PAGES.contains(&page) => {
                out.push_str(&format!("crate::guide::{page}{anchor}"));
            }
            _ if file.starts_with("img/") && file.ends_with(".svg") => {
                let svg =
                    fs::read(format!("docs/{file}")).unwrap_or_else(|e| panic!("docs/{file}: {e}"));
                out.push_str("data:image/svg+xml;base64,");
                out.push_str(&base64(&svg));
            }
            _ => out.push_str(target),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Escapes `[...]` that is not a link (`[0]`, `[::1]:80` outside code), which
/// rustdoc would take for an intra-doc link; code spans stay as they are.
fn escape_brackets(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '`' {
            in_code = !in_code;
        } else if c == '[' && !in_code {
            let close = chars[i + 1..]
                .iter()
                .position(|&c| c == ']')
                .map(|k| i + 1 + k);
            let is_link = close.is_some_and(|k| chars.get(k + 1) == Some(&'('));
            if let (Some(k), false) = (close, is_link) {
                out.push_str("\\[");
                out.extend(&chars[i + 1..k]);
                out.push_str("\\]");
                i = k + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
