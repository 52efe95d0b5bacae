//! The CNI specification versions this plugin speaks, and what each one allows.

use std::fmt;

/// A CNI specification version this plugin accepts in `cniVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first (the order VERSION reports them in).
    pub const SUPPORTED: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest supported version; used when the request names none we can echo.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Exact match against the supported list (`"1.0"` or `"1.2.0"` are not accepted).
    pub fn parse(s: &str) -> Option<CniVersion> {
        Self::SUPPORTED.into_iter().find(|v| v.as_str() == s)
    }

    /// 0.3.x and 0.4.0 results carry `ips[].version` ("4" or "6"); 1.0.0 removed it.
    pub fn ips_carry_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// The oldest version that defines `verb`, for verbs newer than 0.3.0.
    pub fn minimum_for(verb: &str) -> CniVersion {
        match verb {
            "CHECK" => CniVersion::V0_4_0,
            "GC" | "STATUS" => CniVersion::V1_1_0,
            _ => CniVersion::V0_3_0,
        }
    }

    /// The supported list as `"0.3.0", "0.3.1", …` for error details.
    pub fn supported_list() -> String {
        let quoted: Vec<String> = Self::SUPPORTED
            .iter()
            .map(|v| format!("{:?}", v.as_str()))
            .collect();
        quoted.join(", ")
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `s` looks like a semantic version `MAJOR.MINOR.PATCH` (digits only), so that it can
/// be echoed back in an error result even though this plugin does not support it.
pub fn looks_like_semver(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_exact_versions_only() {
        for v in CniVersion::SUPPORTED {
            assert_eq!(CniVersion::parse(v.as_str()), Some(v));
        }
        for bad in ["", "1.0", "0.2.0", "0.1.0", "1.2.0", "v1.0.0", " 1.0.0"] {
            assert_eq!(CniVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn version_features() {
        assert!(CniVersion::V0_3_0.ips_carry_version());
        assert!(CniVersion::V0_4_0.ips_carry_version());
        assert!(!CniVersion::V1_0_0.ips_carry_version());
        assert_eq!(CniVersion::minimum_for("CHECK"), CniVersion::V0_4_0);
        assert_eq!(CniVersion::minimum_for("GC"), CniVersion::V1_1_0);
        assert_eq!(CniVersion::minimum_for("STATUS"), CniVersion::V1_1_0);
        assert_eq!(CniVersion::minimum_for("ADD"), CniVersion::V0_3_0);
        assert_eq!(
            CniVersion::supported_list(),
            r#""0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0""#
        );
    }

    #[test]
    fn semver_shape() {
        assert!(looks_like_semver("0.2.0"));
        assert!(looks_like_semver("2.10.3"));
        assert!(!looks_like_semver("1.0"));
        assert!(!looks_like_semver("a.b.c"));
        assert!(!looks_like_semver("1..0"));
        assert!(!looks_like_semver("1.0.0-rc1"));
    }
}
