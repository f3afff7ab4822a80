//! `shared::store::schema` is the only place keys are spelled: a key literal ("USER#{id}", "PROFILE",
//! "LEDGER#", ...) in any other source file of the services fails this test. Test code may spell keys to
//! check what was stored.

use std::path::{Path, PathBuf};

/// Every word a partition key, sort key or sort-key prefix is made of.
const KEY_WORDS: [&str; 55] = [
    "USER",
    "EMAIL",
    "SESSION",
    "APIKEY",
    "APIKEYSLOT",
    "LOGIN",
    "LOGINFAIL",
    "KYC",
    "KYCSUBMIT",
    "KYCDOC",
    "KYCDECISION",
    "VAULT",
    "SECRET",
    "TOPUP",
    "TOPUPS",
    "RZPORDER",
    "RZPPAYMENT",
    "RZPREFUND",
    "RZPEVENT",
    "RZPDISPUTE",
    "WALLET",
    "WALLETS",
    "PAYMENTREVIEW",
    "REFUNDREQUEST",
    "CLOSURES",
    "PROFILE",
    "CLAIM",
    "WINDOW",
    "KEY",
    "ORDER",
    "CREDIT",
    "DEBIT",
    "EVENT",
    "DISPUTE",
    "CONSENT",
    "LEDGER",
    "USAGE",
    "PRIVACYREQ",
    "EXPORT",
    "PENDING",
    "OUTBOX",
    "EMAILTOKEN",
    "RESETTOKEN",
    "UNSUB",
    "MAILSENT",
    "SUPPRESS",
    "SUPPRESSED",
    "RATE",
    "NOTICE",
    "TOKEN",
    "SENT",
    "ACCOUNTS",
    "COMPLETE",
    "KYCQUEUE",
    "DISPUTES",
];

/// The sources of the services, the local server and the functions (not their tests).
fn service_sources(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    rust_files(&root.join("shared/src"), &mut files)?;
    rust_files(&root.join("dev-server/src"), &mut files)?;
    for function in std::fs::read_dir(root.join("functions"))? {
        rust_files(&function?.path().join("src"), &mut files)?;
    }
    Ok(files)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The contents of the string literals of `code` (escapes kept as written; char literals skipped).
fn string_literals(code: &str) -> Vec<String> {
    let code = code.replace("'\"'", "' '");
    let (mut literals, mut current, mut inside, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in code.chars() {
        match (inside, c) {
            (true, _) if escaped => {
                escaped = false;
                current.push(c);
            }
            (true, '\\') => {
                escaped = true;
                current.push(c);
            }
            (true, '"') => {
                literals.push(std::mem::take(&mut current));
                inside = false;
            }
            (true, _) => current.push(c),
            (false, '"') => inside = true,
            (false, _) => {}
        }
    }
    literals
}

fn is_key_literal(literal: &str) -> bool {
    KEY_WORDS
        .iter()
        .any(|word| literal == *word || literal.strip_prefix(word).is_some_and(|rest| rest.starts_with('#')))
}

#[test]
fn schema_is_the_only_place_keys_are_spelled() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = service_sources(&root)?;
    assert!(files.len() > 40, "the scan found the sources");
    let schema = root.join("shared/src/store/schema.rs");
    let mut found = Vec::new();
    for file in files.iter().filter(|f| **f != schema) {
        let text = std::fs::read_to_string(file)?;
        // Unit tests sit at the end of a file, after `#[cfg(test)]`.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for literal in string_literals(code).into_iter().filter(|l| is_key_literal(l)) {
            found.push(format!("{}: \"{literal}\"", file.strip_prefix(&root).unwrap_or(file).display()));
        }
    }
    assert!(found.is_empty(), "keys spelled outside shared::store::schema:\n{}", found.join("\n"));
    Ok(())
}

#[test]
fn the_scan_recognises_keys_and_nothing_else() {
    let code =
        r##"let a = format!("USER#{id}"); let b = "PROFILE"; let c = "KEY_ID"; let d = '"'; let e = "a \"LEDGER#\"";"##;
    let keys: Vec<String> = string_literals(code).into_iter().filter(|l| is_key_literal(l)).collect();
    assert_eq!(keys, ["USER#{id}", "PROFILE"]);
}

/// The module a source file belongs to, as the ownership table names modules: `shared/src/<module>/...`;
/// `function <name>` and `dev-server` for the rest (they own no item).
fn module_of(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).unwrap_or(file);
    let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned()).collect();
    match parts.as_slice() {
        [shared, src, module, ..] if shared == "shared" && src == "src" => module.clone(),
        [functions, name, ..] if functions == "functions" => format!("function {name}"),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// Whether `code` names `key` (`sk::PROFILE`, `WALLETS_PK`, `email_pk`) as a whole word.
fn names(code: &str, key: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices(key).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + key.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The keys `schema.rs` defines: `sk::X`, `prefix::X` and `kind::X` constants, singleton `*_PK` constants and
/// `*_pk` builders (and the shared makers).
fn schema_keys(schema: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut module = String::new();
    for line in schema.split("#[cfg(test)]").next().unwrap_or_default().lines() {
        if let Some(name) = line.strip_prefix("pub mod ").and_then(|l| l.strip_suffix(" {")) {
            module = name.to_owned();
        } else if line == "}" {
            module.clear();
        }
        let line = line.trim_start();
        let name = |rest: &str| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
        if let Some(rest) = line.strip_prefix("pub const ") {
            let name = name(rest);
            keys.push(if module.is_empty() { name } else { format!("{module}::{name}") });
        } else if let Some(rest) = line.strip_prefix("pub fn ") {
            keys.push(name(rest));
        }
    }
    keys
}

/// Each module owns its items in practice: a key's constant or builder is named only by its owner (the table
/// in `shared::store::owners`), the modules that read every key, and test support.
#[test]
fn each_key_is_named_only_by_the_module_that_owns_it() -> Result<(), Box<dyn std::error::Error>> {
    use shared::store::owners::{OWNERS, READ_ALL};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = service_sources(&root)?;
    // The fleet's test harness reads items raw to check them from outside, as tests do.
    let test_support = [root.join("dev-server/src/fleet/harness.rs")];
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !test_support.contains(f)) {
        let module = module_of(&root, file);
        if READ_ALL.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file)?;
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (key, owners) in OWNERS {
            if !owners.contains(&module.as_str()) && names(code, key) {
                found.push(format!(
                    "{}: {key} (owned by {})",
                    file.strip_prefix(&root).unwrap_or(file).display(),
                    owners.join(", ")
                ));
            }
        }
        if let Some(at) = code.find("kind::") {
            found.push(format!("{}: {} (partition kinds are retention's)", file.display(), &code[at..at + 12]));
        }
    }
    assert!(found.is_empty(), "keys named outside their owner (ask the owner instead):\n{}", found.join("\n"));
    Ok(())
}

/// Every key of `schema` has an owner in the table (or is one of the shared makers, or a partition kind), and
/// the table names no key `schema` lacks.
#[test]
fn every_key_has_an_owner() -> Result<(), Box<dyn std::error::Error>> {
    use shared::store::owners::{OWNERS, SHARED};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let keys = schema_keys(&std::fs::read_to_string(root.join("shared/src/store/schema.rs"))?);
    assert!(keys.len() > 60, "the scan found the keys: {keys:?}");
    let owned: Vec<&str> = OWNERS.iter().map(|(key, _)| *key).collect();
    let orphans: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with("kind::") && !SHARED.contains(&k.as_str()) && !owned.contains(&k.as_str()))
        .collect();
    assert!(orphans.is_empty(), "keys with no owner in shared::store::owners: {orphans:?}");
    let unknown: Vec<&&str> = owned.iter().filter(|k| !keys.iter().any(|key| key == **k)).collect();
    assert!(unknown.is_empty(), "owners of keys schema does not define: {unknown:?}");
    assert!(OWNERS.iter().all(|(_, owners)| !owners.is_empty()));
    Ok(())
}

#[test]
fn a_key_is_found_as_a_whole_word_only() {
    assert!(names("let pk = schema::payment_pk(id);", "payment_pk"));
    assert!(!names("let guard_payment_pk = 1;", "payment_pk"));
    assert!(names("use crate::store::schema::sk::PROFILE as PROFILE_SK;", "sk::PROFILE"));
    assert!(!names("schema::sk::PROFILES", "sk::PROFILE"));
    assert_eq!(module_of(Path::new("/r"), Path::new("/r/shared/src/wallet/metering/purses/mod.rs")), "wallet");
    assert_eq!(module_of(Path::new("/r"), Path::new("/r/functions/usage/src/lib.rs")), "function usage");
}
