//! The wire contract: code generated from `proto/rewind/v1/*.proto` and the
//! `TryFrom` conversions between wire messages and domain values. Nothing
//! outside this module touches raw proto structs' invariants: invalid wire
//! data is rejected here with a [`WireError`] that names the field, and that
//! becomes `INVALID_ARGUMENT` at the service edge.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Generated messages and tonic stubs for package `rewind.v1`.
pub mod v1 {
    tonic::include_proto!("rewind.v1");
}

/// The encoded `FileDescriptorSet` of every Rewind proto file, for server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rewind_descriptor.bin"));

use crate::Digest;
use crate::fleet::{self, AgentId, FleetValueError, Labels};

/// Wire data that does not convert to a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{field}: missing")]
    Missing { field: &'static str },
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

impl WireError {
    fn invalid(field: &'static str, e: impl std::fmt::Display) -> Self {
        WireError::Invalid { field, message: e.to_string() }
    }
}

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

fn digest(field: &'static str, s: &str) -> Result<Digest, WireError> {
    s.parse().map_err(|e| WireError::invalid(field, e))
}

fn short_text(field: &'static str, s: String, max: usize) -> Result<String, WireError> {
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(WireError::invalid(field, format!("expected at most {max} printable characters")));
    }
    Ok(s)
}

/// Validates wire labels.
///
/// # Errors
/// [`WireError::Invalid`] naming the first bad label.
pub fn labels_from_wire(
    field: &'static str,
    labels: std::collections::HashMap<String, String>,
) -> Result<Labels, WireError> {
    if labels.len() > 64 {
        return Err(WireError::invalid(field, "at most 64 labels"));
    }
    labels
        .into_iter()
        .map(|(k, v)| {
            fleet::check_label(&k, &v).map(|()| (k, v)).map_err(|e: FleetValueError| WireError::invalid(field, e))
        })
        .collect()
}

/// Labels as a wire map.
#[must_use]
pub fn labels_to_wire(labels: &Labels) -> std::collections::HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl TryFrom<v1::AuditHead> for fleet::AuditHead {
    type Error = WireError;
    fn try_from(w: v1::AuditHead) -> Result<Self, WireError> {
        let hash = if w.hash.is_empty() { None } else { Some(digest("audit.hash", &w.hash)?) };
        if hash.is_none() && w.seq != 0 {
            return Err(WireError::invalid("audit.hash", format!("missing for a chain of {} entries", w.seq)));
        }
        Ok(fleet::AuditHead { seq: w.seq, hash })
    }
}

impl From<&fleet::AuditHead> for v1::AuditHead {
    fn from(h: &fleet::AuditHead) -> Self {
        v1::AuditHead { seq: h.seq, hash: h.hash.map(|d| d.to_string()).unwrap_or_default() }
    }
}

impl TryFrom<v1::TargetState> for fleet::TargetState {
    type Error = WireError;
    fn try_from(w: v1::TargetState) -> Result<Self, WireError> {
        let digests = if w.error.is_empty() {
            fleet::TargetDigest::Ok {
                schema: digest("inventory.targets.schema_digest", &w.schema_digest)?,
                data: digest("inventory.targets.data_digest", &w.data_digest)?,
            }
        } else {
            fleet::TargetDigest::Unreadable { error: short_text("inventory.targets.error", w.error, 4096)? }
        };
        Ok(fleet::TargetState {
            product: short_text("inventory.targets.product", w.product, 128)?,
            name: short_text("inventory.targets.name", w.name, 128)?,
            digests,
        })
    }
}

impl From<&fleet::TargetState> for v1::TargetState {
    fn from(t: &fleet::TargetState) -> Self {
        let (schema_digest, data_digest, error) = match &t.digests {
            fleet::TargetDigest::Ok { schema, data } => (schema.to_string(), data.to_string(), String::new()),
            fleet::TargetDigest::Unreadable { error } => (String::new(), String::new(), error.clone()),
        };
        v1::TargetState { product: t.product.clone(), name: t.name.clone(), schema_digest, data_digest, error }
    }
}

impl TryFrom<v1::InstalledProduct> for fleet::InstalledProduct {
    type Error = WireError;
    fn try_from(w: v1::InstalledProduct) -> Result<Self, WireError> {
        if w.name.is_empty() {
            return Err(WireError::Missing { field: "inventory.products.name" });
        }
        Ok(fleet::InstalledProduct {
            name: short_text("inventory.products.name", w.name, 128)?,
            sequence: w.sequence,
            release: short_text("inventory.products.release", w.release, 128)?,
            plan_id: short_text("inventory.products.plan_id", w.plan_id, 128)?,
        })
    }
}

impl From<&fleet::InstalledProduct> for v1::InstalledProduct {
    fn from(p: &fleet::InstalledProduct) -> Self {
        v1::InstalledProduct {
            name: p.name.clone(),
            sequence: p.sequence,
            release: p.release.clone(),
            plan_id: p.plan_id.clone(),
        }
    }
}

impl TryFrom<v1::Inventory> for fleet::Inventory {
    type Error = WireError;
    fn try_from(w: v1::Inventory) -> Result<Self, WireError> {
        if w.products.len() > 1024 || w.targets.len() > 4096 {
            return Err(WireError::invalid("inventory", "at most 1024 products and 4096 targets"));
        }
        Ok(fleet::Inventory {
            products: w.products.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
            targets: w.targets.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
        })
    }
}

impl From<&fleet::Inventory> for v1::Inventory {
    fn from(i: &fleet::Inventory) -> Self {
        v1::Inventory {
            products: i.products.iter().map(Into::into).collect(),
            targets: i.targets.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<v1::Hello> for fleet::Hello {
    type Error = WireError;
    fn try_from(w: v1::Hello) -> Result<Self, WireError> {
        Ok(fleet::Hello {
            agent_id: AgentId::parse(&w.agent_id).map_err(|e| WireError::invalid("hello.agent_id", e))?,
            agent_version: short_text("hello.agent_version", w.agent_version, 64)?,
            hostname: short_text("hello.hostname", w.hostname, 255)?,
            inventory: w.inventory.map(TryInto::try_into).transpose()?.unwrap_or_default(),
            audit: w.audit.map(TryInto::try_into).transpose()?.unwrap_or_default(),
        })
    }
}

impl From<&fleet::Hello> for v1::Hello {
    fn from(h: &fleet::Hello) -> Self {
        v1::Hello {
            agent_id: h.agent_id.to_string(),
            agent_version: h.agent_version.clone(),
            hostname: h.hostname.clone(),
            inventory: Some((&h.inventory).into()),
            audit: Some((&h.audit).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn arb_digest() -> impl Strategy<Value = Digest> {
        any::<[u8; 32]>().prop_map(Digest)
    }

    fn arb_target() -> impl Strategy<Value = fleet::TargetState> {
        (
            "[a-z]{1,8}",
            "[a-z]{1,8}",
            prop_oneof![
                (arb_digest(), arb_digest()).prop_map(|(schema, data)| fleet::TargetDigest::Ok { schema, data }),
                "[a-z ]{1,20}".prop_map(|error| fleet::TargetDigest::Unreadable { error }),
            ],
        )
            .prop_map(|(product, name, digests)| fleet::TargetState { product, name, digests })
    }

    fn arb_hello() -> impl Strategy<Value = fleet::Hello> {
        (
            "[a-z0-9]{1,20}",
            proptest::collection::vec(("[a-z]{1,8}", any::<u64>(), "[0-9.]{0,10}", "[a-z0-9-]{0,12}"), 0..4),
            proptest::collection::vec(arb_target(), 0..4),
            proptest::option::of((1u64.., arb_digest())),
        )
            .prop_map(|(id, products, targets, head)| fleet::Hello {
                agent_id: AgentId::parse(&id).unwrap(),
                agent_version: "0.1.0".into(),
                hostname: "host".into(),
                inventory: fleet::Inventory {
                    products: products
                        .into_iter()
                        .map(|(name, sequence, release, plan_id)| fleet::InstalledProduct {
                            name,
                            sequence,
                            release,
                            plan_id,
                        })
                        .collect(),
                    targets,
                },
                audit: head.map(|(seq, h)| fleet::AuditHead { seq, hash: Some(h) }).unwrap_or_default(),
            })
    }

    proptest! {
        #[test]
        fn hello_round_trips(h in arb_hello()) {
            let wire = v1::Hello::from(&h);
            let bytes = prost::Message::encode_to_vec(&wire);
            let back: v1::Hello = prost::Message::decode(bytes.as_slice()).unwrap();
            prop_assert_eq!(fleet::Hello::try_from(back).unwrap(), h);
        }
    }

    #[test]
    fn invalid_wire_data_is_named() {
        let mut w = v1::Hello { agent_id: "agt-1".into(), ..Default::default() };
        w.inventory = Some(v1::Inventory {
            targets: vec![v1::TargetState {
                product: "p".into(),
                name: "n".into(),
                schema_digest: "b3:zz".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let e = fleet::Hello::try_from(w).unwrap_err();
        assert!(e.to_string().starts_with("inventory.targets.schema_digest:"), "{e}");
        let e = fleet::Hello::try_from(v1::Hello { agent_id: "BAD ID".into(), ..Default::default() }).unwrap_err();
        assert!(e.to_string().starts_with("hello.agent_id:"), "{e}");
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let e = fleet::AuditHead::try_from(v1::AuditHead { seq: 3, hash: String::new() }).unwrap_err();
        assert!(e.to_string().contains("missing for a chain of 3"), "{e}");
    }
}
