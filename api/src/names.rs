//! Kubernetes object-name forms, checked before a name is used (in a request path, as a pool
//! reference).

/// A lowercase RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 bytes (namespaces).
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A lowercase RFC 1123 subdomain: dot-separated labels, at most 253 bytes (most names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert!(is_dns1123_label("web-0"));
        assert!(!is_dns1123_label("web.0"));
        assert!(!is_dns1123_label("-web"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("net1.10-20-0-5"));
        assert!(!is_dns1123_subdomain("Web"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(&format!("{}.b", "a".repeat(252))));
    }
}
