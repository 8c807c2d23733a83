//! Protobuf and gRPC bindings for the Layotto-compatible Plinth API.
//!
//! The `.proto` sources under `proto/` are Plinth's own, wire-compatible
//! rewrites of Layotto's `spec/proto/runtime/v1` package. They are compiled
//! hermetically at build time (no system `protoc`) with `protox` and
//! `tonic-prost-build`; both clients and servers are generated.

/// Package `spec.proto.runtime.v1`.
pub mod runtime {
    /// Generated messages, clients and servers for `spec.proto.runtime.v1`:
    /// the `Runtime`, `AppCallback` and `Lifecycle` services.
    #[allow(
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        missing_docs,
        missing_debug_implementations,
        unreachable_pub,
        rust_2018_idioms
    )]
    pub mod v1 {
        tonic::include_proto!("spec.proto.runtime.v1");
    }
}

/// Package `plinth.admin.v1`: Plinth's own management services.
pub mod admin {
    /// Generated messages, clients and servers for `plinth.admin.v1`: the `Functions`
    /// service.
    #[allow(
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        missing_docs,
        missing_debug_implementations,
        unreachable_pub,
        rust_2018_idioms
    )]
    pub mod v1 {
        tonic::include_proto!("plinth.admin.v1");
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of all Plinth protos and their
/// imports, e.g. for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("plinth_descriptor");

#[cfg(test)]
mod tests {
    use prost::Message as _;

    #[test]
    fn descriptor_set_contains_all_services() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let services: Vec<String> = fds
            .file
            .iter()
            .filter(|f| f.package() == "spec.proto.runtime.v1")
            .flat_map(|f| f.service.iter().map(|s| s.name().to_owned()))
            .collect();
        for name in ["Runtime", "AppCallback", "Lifecycle"] {
            assert!(services.iter().any(|s| s == name), "missing service {name}");
        }
        let runtime = fds
            .file
            .iter()
            .flat_map(|f| f.service.iter())
            .find(|s| s.name() == "Runtime")
            .expect("Runtime service");
        assert_eq!(runtime.method.len(), 26);
        assert!(
            fds.file
                .iter()
                .any(|f| f.name() == "google/protobuf/any.proto")
        );
    }

    #[test]
    fn generated_types_round_trip() {
        use super::runtime::v1::{
            ExecuteStateTransactionRequest, StateItem, TransactionalStateOperation,
        };
        let req = ExecuteStateTransactionRequest {
            store_name: "redis".into(),
            operations: vec![TransactionalStateOperation {
                operation_type: "upsert".into(),
                request: Some(StateItem {
                    key: "k".into(),
                    value: b"v".to_vec(),
                    ..Default::default()
                }),
            }],
            metadata: Default::default(),
        };
        let bytes = req.encode_to_vec();
        assert_eq!(
            ExecuteStateTransactionRequest::decode(bytes.as_slice()).expect("decodes"),
            req
        );
    }
}
