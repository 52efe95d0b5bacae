//! OpenAPI schema fragments with CEL rules, so that `kubectl apply` of a bad pool fails with a
//! message at once instead of surfacing later in a controller log. Lengths and item counts are
//! bounded because kube-apiserver refuses CEL rules whose estimated cost is unbounded.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

const IP_MAX: u32 = 45;
const SPAN_MAX: u32 = 100;
const LIST_MAX: u32 = 64;

/// A single address or `first-last`, in CEL.
const SPAN_RULE: &str = "self.split('-').size() <= 2 && self.split('-').all(p, isIP(p))";

fn rule(rule: &str, message: &str) -> Value {
    json!({"rule": rule, "message": message})
}

pub fn cidr(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": IP_MAX + 4,
        "x-kubernetes-validations": [
            rule("isCIDR(self)", "must be a CIDR such as 10.20.0.0/24 or fd00:20::/64"),
            rule("!isCIDR(self) || cidr(self).masked() == cidr(self)",
                 "must have no host bits set (10.20.0.0/24, not 10.20.0.5/24)"),
        ],
    })
}

pub fn cidr_any(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": IP_MAX + 4,
        "x-kubernetes-validations": [rule("isCIDR(self)", "must be a CIDR such as 0.0.0.0/0")],
    })
}

fn ip_schema() -> Value {
    json!({
        "type": "string",
        "maxLength": IP_MAX,
        "x-kubernetes-validations": [rule("isIP(self)", "must be an IP address")],
    })
}

pub fn optional_ip(_: &mut SchemaGenerator) -> Schema {
    let mut s: Schema = ip_schema().try_into().expect("object schema");
    s.insert("nullable".into(), json!(true));
    s
}

pub fn ips(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "array", "maxItems": 16, "items": ip_schema()})
}

pub fn ranges(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": LIST_MAX,
        "items": {
            "type": "string",
            "maxLength": SPAN_MAX,
            "x-kubernetes-validations": [
                rule(SPAN_RULE, "must be an address or a first-last range, e.g. 10.20.0.10-10.20.0.200"),
            ],
        },
    })
}

pub fn excludes(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": LIST_MAX,
        "items": {
            "type": "string",
            "maxLength": SPAN_MAX,
            "x-kubernetes-validations": [
                rule(&format!("isCIDR(self) || ({SPAN_RULE})"),
                     "must be a CIDR, an address or a first-last range"),
            ],
        },
    })
}

pub fn network(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 63,
        "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
    })
}

/// Rules that relate several fields of a pool's spec; each is guarded so that a malformed
/// field reports its own error instead of a CEL evaluation error here.
pub fn pool_spec_rules() -> Value {
    json!([
        rule(
            "!has(self.gateway) || !isCIDR(self.cidr) || !isIP(self.gateway) || cidr(self.cidr).containsIP(self.gateway)",
            "gateway must lie inside cidr",
        ),
        rule(
            "!has(self.ranges) || !isCIDR(self.cidr) || self.ranges.all(r, r.split('-').all(p, !isIP(p) || cidr(self.cidr).containsIP(p)))",
            "every range must lie inside cidr",
        ),
        // Claim names carry the network, so a pool that changed network would no longer see
        // its claims' addresses as taken; checked here, not against a watch cache that may
        // lag behind a claim being created.
        rule(
            "(has(self.network) ? self.network : '') == (has(oldSelf.network) ? oldSelf.network : '')",
            "network is immutable: create a new pool for another network",
        ),
    ])
}
