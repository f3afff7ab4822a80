//! Every secret value that appears in this repository is on the well-known list, so none of them can ever
//! start a function: each literal (quoted, or a word of a line) of 16 characters or more that would pass as
//! a provider-issued secret must be listed in `shared/src/runtime_secrets/well_known.txt`, or be made at
//! run time instead (tests use random values).

use std::path::{Path, PathBuf};

use shared::runtime_secrets::{ISSUED_BITS, SecretRule, checked, strength};

/// Folders that hold no source of ours: build output, installed tools, local data, git itself.
const SKIPPED_DIRS: [&str; 7] = ["target", ".git", ".tools", ".inferex", "node_modules", ".aws-sam", "images"];
const TEXT_FILES: [&str; 13] =
    ["rs", "py", "sh", "md", "yaml", "yml", "toml", "json", "js", "html", "txt", "css", "eml"];

fn repository_files() -> Result<Vec<PathBuf>, std::io::Error> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    let mut pending = vec![root];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if path.is_dir() {
                if !SKIPPED_DIRS.contains(&name.as_str()) {
                    pending.push(path);
                }
            } else if name == "Makefile"
                || path.extension().and_then(|e| e.to_str()).is_some_and(|e| TEXT_FILES.contains(&e))
            {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// The words of a line that could be a secret: runs of the characters secrets are made of, with letters and
/// digits both, that are not lower-case names (`snake_case`, `kebab-case`, UUIDs). Names, phrases, paths
/// and versions are not secrets; a run of words passes the strength estimate as a passphrase would.
fn candidates(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || "_-+~".contains(c)))
        .map(|word| word.trim_matches(|c: char| "-_".contains(c)))
        .filter(|word| (16..=200).contains(&word.len()))
        .filter(|word| word.chars().any(|c| c.is_ascii_digit()) && word.chars().any(|c| c.is_ascii_alphabetic()))
        .filter(|word| {
            let separators = word.chars().filter(|c| "-_".contains(*c)).count();
            separators < 2 || word.chars().any(|c| c.is_ascii_uppercase())
        })
}

#[test]
fn well_known_secrets_are_listed() -> Result<(), Box<dyn std::error::Error>> {
    let rule = SecretRule { min_chars: 16, min_bits: ISSUED_BITS };
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runtime_secrets/well_known.txt").canonicalize()?;
    let files = repository_files()?;
    assert!(files.len() > 100, "the scan found the repository ({} files)", files.len());
    let mut unlisted = Vec::new();
    for file in files {
        if file.canonicalize()? == list {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for (number, line) in text.lines().enumerate() {
            for word in candidates(line) {
                if checked("candidate", word, rule).is_ok() {
                    unlisted.push(format!("{}:{}: {word}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "these would pass as secrets: list them in well_known.txt or make them at run time:\n{}",
        unlisted.join("\n")
    );
    assert!(strength::well_known().count() >= 4);
    Ok(())
}
