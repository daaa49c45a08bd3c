//! PEM in and out. Parsing goes through `rustls-pki-types` (the same parser
//! rustls uses); encoding is the 64-column RFC 7468 form every tool reads.

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why a PEM input was refused; callers wrap it with the name of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PemProblem {
    /// No section of the expected kind.
    Missing,
    /// A section is malformed (bad base64, no END line...).
    Malformed(String),
}

impl std::fmt::Display for PemProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("no PEM section of the expected kind"),
            Self::Malformed(detail) => write!(f, "malformed PEM: {detail}"),
        }
    }
}

pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // base64 output is ASCII, so byte chunks are char boundaries.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

pub(crate) fn encode_certs<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    certs
        .into_iter()
        .map(|c| encode("CERTIFICATE", c.as_ref()))
        .collect()
}

/// Every CERTIFICATE section, in order; at least one.
pub(crate) fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PemProblem> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemProblem::Malformed(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemProblem::Missing);
    }
    Ok(certs)
}

pub(crate) fn parse_one<T: PemObject>(pem: &str) -> Result<T, PemProblem> {
    T::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PemProblem::Missing,
        other => PemProblem::Malformed(other.to_string()),
    })
}
