//! Which library skills a template's agents may install: names, or
//! prefixes ending in `*` (`oncall-*`); `*` alone is every skill.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowlist(Option<Vec<String>>);

impl Allowlist {
    /// Every skill the library has (a template that says nothing).
    pub fn all() -> Self {
        Self(None)
    }

    pub fn of(patterns: Vec<String>) -> Self {
        Self(Some(patterns))
    }

    pub fn allows(&self, name: &str) -> bool {
        match &self.0 {
            None => true,
            Some(patterns) => patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => p == name,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_match_and_nothing_else_does() {
        let a = Allowlist::of(vec!["pipeline-status".into(), "oncall-*".into()]);
        assert!(a.allows("pipeline-status"));
        assert!(a.allows("oncall-pager"));
        assert!(!a.allows("pipeline-status-2"));
        assert!(!a.allows("deploy"));
        assert!(Allowlist::of(vec!["*".into()]).allows("anything"));
        assert!(!Allowlist::of(vec![]).allows("anything"));
        assert!(Allowlist::all().allows("anything"));
    }
}
