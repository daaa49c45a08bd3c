//! Error chains, said in words a person can act on.

/// The innermost cause of an error ("Connection refused (os error 111)",
/// "dns error: ..."), without the URL and context wrapped around it: what a
/// person can act on.
pub fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
