//! Tax documents' PDFs read back as text, with poppler's `pdftotext` (installed by `scripts/ensure-tools.sh`).

/// The text `pdftotext -layout` reads from a PDF file's bytes.
pub fn pdf_text(bytes: &[u8]) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    assert!(bytes.starts_with(b"%PDF-"), "a PDF file");
    let path = std::env::temp_dir().join(format!("inferex-tax-{}.pdf", shared::secrets::random_suffix()));
    std::fs::write(&path, bytes)?;
    let output = std::process::Command::new("pdftotext").arg("-layout").arg(&path).arg("-").output();
    std::fs::remove_file(&path)?;
    let output = output.map_err(|e| format!("pdftotext is needed (scripts/ensure-tools.sh installs it): {e}"))?;
    assert!(output.status.success(), "pdftotext read the file");
    Ok(String::from_utf8(output.stdout)?)
}
