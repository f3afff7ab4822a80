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
    let mut files = Vec::new();
    rust_files(&root.join("shared/src"), &mut files)?;
    rust_files(&root.join("dev-server/src"), &mut files)?;
    for function in std::fs::read_dir(root.join("functions"))? {
        rust_files(&function?.path().join("src"), &mut files)?;
    }
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
